//! The node's background task, run once a minute: drops reply records past
//! the retry window, forgets series past expiry, replaces a change series
//! that has used half its lifetime, and updates the spent-set gauges.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::node::{Node, unix_now};

/// Time between two rounds.
pub(crate) const INTERVAL: Duration = Duration::from_secs(60);

/// Runs rounds until `stop` fires (or its sender is dropped). The first
/// round runs at once, so the gauges are set from the start.
pub(crate) async fn run(node: Arc<Node>, mut stop: oneshot::Receiver<()>) {
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut stop => break,
        }
        round(&node, unix_now()).await;
    }
}

/// One round of upkeep; failures are logged and retried next round.
pub(crate) async fn round(node: &Arc<Node>, now: u64) {
    // Pruning walks every record past the window, which can be many after
    // a busy minute, so it runs off the async worker threads.
    let pruning = node.clone();
    match tokio::task::spawn_blocking(move || pruning.spends.prune_replies(now)).await {
        Ok(Ok(removed)) if removed > 0 => {
            tracing::debug!(removed, "reply records past the retry window removed");
        }
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(%error, "removing old reply records failed"),
        Err(error) => tracing::warn!(%error, "removing old reply records failed"),
    }

    for vendor in node.vendors() {
        if let Err(error) = vendor
            .forget_expired_series(&node.spends, now, node.retry_window_secs)
            .await
        {
            tracing::warn!(vendor = %vendor.name(), %error, "forgetting expired series failed");
        }
        if let Err(error) = vendor.rotate_change_series(now).await {
            tracing::warn!(vendor = %vendor.name(), %error, "starting a new change series failed");
        }
    }

    metrics::gauge!("millicent_vendor_spent_ids").set(node.spends.len() as f64);
    metrics::gauge!("millicent_vendor_spent_memory_bytes").set(node.spends.memory_bytes() as f64);
}
