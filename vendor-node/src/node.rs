//! The state a running node shares between its requests and its background
//! task: the vendors, the spent IDs and the ledger they are kept in, and the
//! cluster map that says which node owns the series this one does not.

use std::collections::HashMap;
use std::sync::Arc;

use millicent_core::{Suite, VendorName};
use millicent_ledger::{Ledger, SpendStore};
use zeroize::Zeroizing;

use crate::cluster::ClusterMap;
use crate::config::Settings;
use crate::keys::KeyStore;
use crate::vendor::Vendor;
use crate::{VendorConfig, VendorError};

/// Name of the ledger table of spent IDs and reply records.
pub(crate) const SPENDS_TABLE: &str = "spends";

/// Everything a request may touch.
pub(crate) struct Node {
    pub(crate) ledger: Ledger,
    pub(crate) spends: SpendStore,
    vendors: Vec<Vendor>,
    by_name: HashMap<VendorName, usize>,
    pub(crate) licence_token: Option<Zeroizing<String>>,
    /// ID#s per licence; 0 for the whole series.
    pub(crate) licence_ids: u64,
    pub(crate) retry_window_secs: u64,
    pub(crate) cluster: ClusterMap,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("vendors", &self.vendors)
            .field("spent_ids", &self.spends.len())
            .field("licensing", &self.licence_token.is_some())
            .finish()
    }
}

impl Node {
    /// Opens the node's tables in `ledger` and every vendor's keys.
    pub(crate) async fn open(
        config: &VendorConfig,
        settings: Settings,
        ledger: &Ledger,
        now: u64,
    ) -> Result<Node, VendorError> {
        let Settings {
            catalogues,
            cluster,
            durability: _,
            gateway: _,
        } = settings;
        let spends = SpendStore::open(ledger, SPENDS_TABLE, config.retry_window_secs)?;
        let store = KeyStore::open(ledger, &config.node, cluster.own())?;
        let mut vendors = Vec::with_capacity(catalogues.len());
        for catalogue in catalogues {
            let vendor = Vendor::open(
                catalogue,
                store.clone(),
                ledger.clone(),
                config.series_lifetime_secs,
                now,
            )
            .await?;
            vendors.push(vendor);
        }
        let by_name = vendors
            .iter()
            .enumerate()
            .map(|(index, vendor)| (vendor.name().clone(), index))
            .collect();
        Ok(Node {
            ledger: ledger.clone(),
            spends,
            vendors,
            by_name,
            licence_token: config.licence_token.clone().map(Zeroizing::new),
            licence_ids: config.licence_ids,
            retry_window_secs: config.retry_window_secs,
            cluster,
        })
    }

    /// The vendor called `name`.
    pub(crate) fn vendor(&self, name: &VendorName) -> Result<&Vendor, VendorError> {
        self.vendor_index(name).map(|index| &self.vendors[index])
    }

    /// The position of the vendor called `name`, for handing to a task.
    pub(crate) fn vendor_index(&self, name: &VendorName) -> Result<usize, VendorError> {
        self.by_name
            .get(name)
            .copied()
            .filter(|index| *index < self.vendors.len())
            .ok_or_else(|| VendorError::UnknownVendor {
                vendor: name.as_str().to_owned(),
            })
    }

    /// The vendor at `index`, as returned by [`Node::vendor_index`].
    pub(crate) fn vendor_at(&self, index: usize) -> Option<&Vendor> {
        self.vendors.get(index)
    }

    /// Every vendor, in configuration order.
    pub(crate) fn vendors(&self) -> &[Vendor] {
        &self.vendors
    }
}

/// Reserves change IDs of `suite` for the vendor at `index` in the
/// background, so that payments do not wait for the commit of the next
/// block.
pub(crate) fn refill_in_background(node: &Arc<Node>, index: usize, suite: Suite, now: u64) {
    let Some(vendor) = node.vendor_at(index) else {
        return;
    };
    if !vendor.begin_background_refill(suite) {
        return;
    }
    let node = node.clone();
    tokio::spawn(async move {
        if let Some(vendor) = node.vendor_at(index) {
            if let Err(error) = vendor.refill_change_ids(suite, now).await {
                tracing::warn!(vendor = %vendor.name(), %error, "reserving change IDs failed");
            }
            vendor.end_background_refill(suite);
        }
    });
}

/// The current time in Unix seconds; a clock set before 1970 reads as 0.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}
