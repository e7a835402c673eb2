//! Who may call what: the operator proves itself with a bearer token, an
//! account holder with a MAC under the account key.
//!
//! Both comparisons are constant-time, so timing reveals nothing about how
//! much of a token or MAC was right.

use millicent_core::Suite;
use millicent_core::account::account_mac;
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;

use crate::BrokerError;
use crate::accounts::AccountCall;

const BEARER: &str = "Bearer ";

/// Checks the `authorization: Bearer <token>` entry of an operator call.
/// Without a configured token every operator call is refused.
pub(crate) fn check_bearer(
    metadata: &MetadataMap,
    expected: Option<&str>,
) -> Result<(), BrokerError> {
    let Some(expected) = expected else {
        return Err(BrokerError::Unauthenticated {
            detail: "operator calls are disabled: the broker has no operator token",
        });
    };
    let presented = metadata
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix(BEARER))
        .ok_or(BrokerError::Unauthenticated {
            detail: "an operator call needs an 'authorization: Bearer <token>' entry",
        })?;
    if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(BrokerError::Unauthenticated {
            detail: "the operator token is wrong",
        });
    }
    Ok(())
}

/// Checks that an account call is fresh and carries the MAC of its
/// parameters under `account_key`.
pub(crate) fn verify_call(
    suite: Suite,
    account_key: &[u8],
    call: &AccountCall,
    params: &[u8],
    now_ms: u64,
    window_secs: u64,
) -> Result<(), BrokerError> {
    let window_ms = window_secs.saturating_mul(1000);
    if call.timestamp_ms.abs_diff(now_ms) > window_ms {
        return Err(BrokerError::StaleTimestamp {
            timestamp_ms: call.timestamp_ms,
            now_ms,
            window_secs,
        });
    }
    let expected = account_mac(
        suite,
        account_key,
        call.method.name(),
        call.account_id,
        call.timestamp_ms,
        &call.nonce,
        params,
    );
    if expected != call.mac {
        return Err(BrokerError::Unauthenticated {
            detail: "the call's MAC does not match its account and parameters",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use millicent_core::Mac;
    use tonic::metadata::MetadataValue;

    use super::*;
    use crate::accounts::Method;

    const NOW_MS: u64 = 1_800_000_000_000;

    #[test]
    fn the_operator_token_must_match_exactly() {
        let mut metadata = MetadataMap::new();
        assert!(check_bearer(&metadata, Some("t")).is_err());
        metadata.insert("authorization", MetadataValue::from_static("Bearer t"));
        assert!(check_bearer(&metadata, Some("t")).is_ok());
        assert!(check_bearer(&metadata, Some("tt")).is_err());
        assert!(check_bearer(&metadata, None).is_err());
        metadata.insert("authorization", MetadataValue::from_static("t"));
        assert!(check_bearer(&metadata, Some("t")).is_err());
    }

    #[test]
    fn a_call_needs_a_fresh_timestamp_and_the_right_mac() {
        let key = [7u8; 16];
        let call_at = |timestamp_ms: u64, mac: Mac| AccountCall {
            account_id: 3,
            timestamp_ms,
            nonce: [1; 16],
            mac,
            method: Method::GetAccount,
        };
        let mac_at = |timestamp_ms| {
            account_mac(
                Suite::Classic,
                &key,
                "GetAccount",
                3,
                timestamp_ms,
                &[1; 16],
                b"",
            )
        };
        let good = call_at(NOW_MS, mac_at(NOW_MS));
        assert!(verify_call(Suite::Classic, &key, &good, b"", NOW_MS, 300).is_ok());
        assert!(matches!(
            verify_call(Suite::Classic, &key, &good, b"x", NOW_MS, 300),
            Err(BrokerError::Unauthenticated { .. })
        ));
        assert!(matches!(
            verify_call(Suite::Classic, &[8; 16], &good, b"", NOW_MS, 300),
            Err(BrokerError::Unauthenticated { .. })
        ));
        let old = NOW_MS - 300_001;
        assert!(matches!(
            verify_call(
                Suite::Classic,
                &key,
                &call_at(old, mac_at(old)),
                b"",
                NOW_MS,
                300
            ),
            Err(BrokerError::StaleTimestamp { .. })
        ));
        let ahead = NOW_MS + 300_000;
        let call = call_at(ahead, mac_at(ahead));
        assert!(verify_call(Suite::Classic, &key, &call, b"", NOW_MS, 300).is_ok());
    }
}
