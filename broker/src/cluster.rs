//! The cluster map: which node of the broker keeps which shard.
//!
//! A broker's customer accounts are split into shards by the top byte of
//! the account ID, and its broker scrip by the top byte of the series (see
//! `millicent_core::broker`), so an account and the broker scrip bought
//! from it live in the same shard. Each shard has its own store and is kept
//! by exactly one node; several shards may share a node. No operation of
//! a customer touches two shards: purchases, exchanges, refunds and
//! renewals each happen in the one shard the account or the scrip names.
//!
//! Every node is configured with the whole map (its own shards and those
//! of its peers), so a node that is asked about an account or a piece of
//! scrip of another node's shard refuses with `wrong_node` and names that
//! node; a shard in nobody's map is unknown.

use std::collections::BTreeSet;

/// Another node of the same broker and the shards it keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PeerNode {
    pub(crate) node: String,
    pub(crate) url: String,
    pub(crate) shards: BTreeSet<u8>,
}

/// Who keeps a shard.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Owner<'a> {
    /// This node.
    Here,
    /// Another node of the broker.
    Peer(&'a PeerNode),
    /// No node: the shard does not exist.
    Nobody,
}

/// This node's shards and those of its peers; every shard has one owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClusterMap {
    node: String,
    own: BTreeSet<u8>,
    peers: Vec<PeerNode>,
}

impl ClusterMap {
    /// The map of node `node` keeping `own`, or a description of the first
    /// shard with two owners.
    pub(crate) fn new(
        node: String,
        own: BTreeSet<u8>,
        peers: Vec<PeerNode>,
    ) -> Result<ClusterMap, String> {
        if own.is_empty() {
            return Err(format!(
                "node {node} keeps no shard; list at least one in shards"
            ));
        }
        let mut seen = own.clone();
        for peer in &peers {
            for shard in &peer.shards {
                if !seen.insert(*shard) {
                    return Err(format!(
                        "shard {shard} is listed for peer {} and for another node; every shard \
                         must have exactly one owner",
                        peer.node
                    ));
                }
            }
        }
        Ok(ClusterMap { node, own, peers })
    }

    /// This node's name.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// The shards this node keeps, in order.
    pub(crate) fn own(&self) -> &BTreeSet<u8> {
        &self.own
    }

    /// The other nodes.
    pub(crate) fn peers(&self) -> &[PeerNode] {
        &self.peers
    }

    /// Who keeps `shard`.
    pub(crate) fn owner_of(&self, shard: u8) -> Owner<'_> {
        if self.own.contains(&shard) {
            return Owner::Here;
        }
        match self.peers.iter().find(|peer| peer.shards.contains(&shard)) {
            Some(peer) => Owner::Peer(peer),
            None => Owner::Nobody,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(node: &str, shards: &[u8]) -> PeerNode {
        PeerNode {
            node: node.to_owned(),
            url: format!("http://{node}:7100"),
            shards: shards.iter().copied().collect(),
        }
    }

    #[test]
    fn every_shard_has_at_most_one_owner() {
        let map = ClusterMap::new(
            "broker-1".into(),
            BTreeSet::from([0, 1]),
            vec![peer("broker-2", &[2, 3])],
        )
        .unwrap();
        assert_eq!(map.owner_of(1), Owner::Here);
        assert_eq!(map.owner_of(3), Owner::Peer(&map.peers()[0]));
        assert_eq!(map.owner_of(4), Owner::Nobody);

        let twice = ClusterMap::new(
            "broker-1".into(),
            BTreeSet::from([0, 1]),
            vec![peer("broker-2", &[1])],
        );
        assert!(twice.unwrap_err().contains("shard 1"));
        assert!(ClusterMap::new("broker-1".into(), BTreeSet::new(), vec![]).is_err());
    }
}
