//! The cluster map: which node owns which series.
//!
//! A vendor's spent IDs are partitioned by series. Every node of a vendor
//! allocates the series it creates (its change series and the series of the
//! licences it grants) from its own `series_range`, so the series of a piece
//! of scrip names the one node that holds its master scrip secret and its
//! spent IDs. No payment needs two nodes, and nothing is shared between
//! them but this map, which is configuration.
//!
//! A node that receives scrip of a series it does not hold looks the series
//! up here: if a peer's range contains it, the payment is refused with a
//! pointer to that peer (`wrong_node`); otherwise the series is unknown
//! everywhere (`unknown_series`).

use std::fmt;

/// A closed range of series numbers, `first ..= last`, with `first >= 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SeriesRange {
    first: u32,
    last: u32,
}

impl SeriesRange {
    /// The range `first ..= last`, if it is not empty and leaves out 0 (no
    /// series) and `u32::MAX` (the series counter stops one below it).
    pub(crate) fn new(first: u32, last: u32) -> Option<SeriesRange> {
        (first >= 1 && first <= last && last < u32::MAX).then_some(SeriesRange { first, last })
    }

    /// The first series number of the range.
    pub(crate) fn first(self) -> u32 {
        self.first
    }

    /// The last series number of the range.
    pub(crate) fn last(self) -> u32 {
        self.last
    }

    /// Whether `series` is in the range.
    pub(crate) fn contains(self, series: u32) -> bool {
        (self.first..=self.last).contains(&series)
    }

    /// Whether the two ranges share a series number.
    pub(crate) fn overlaps(self, other: SeriesRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl fmt::Display for SeriesRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.first, self.last)
    }
}

/// Another node of the same vendors, and the series it owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Peer {
    /// Its node name.
    pub(crate) node: String,
    /// Where its clients reach it, for example `http://10.0.0.2:7200`.
    pub(crate) url: String,
    /// The series it allocates.
    pub(crate) series: SeriesRange,
}

/// This node's series and those of its peers; no two ranges overlap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClusterMap {
    own: SeriesRange,
    peers: Vec<Peer>,
}

impl ClusterMap {
    /// The map of a node owning `own`, or the first pair of ranges that
    /// overlap, described for the operator.
    pub(crate) fn new(own: SeriesRange, peers: Vec<Peer>) -> Result<ClusterMap, String> {
        for (index, peer) in peers.iter().enumerate() {
            if peer.series.overlaps(own) {
                return Err(format!(
                    "series_range {} of peer {} overlaps this node's series_range {own}; \
                     every series must have exactly one owner",
                    peer.series, peer.node
                ));
            }
            if let Some(other) = peers[..index]
                .iter()
                .find(|other| other.series.overlaps(peer.series))
            {
                return Err(format!(
                    "series_range {} of peer {} overlaps series_range {} of peer {}; \
                     every series must have exactly one owner",
                    peer.series, peer.node, other.series, other.node
                ));
            }
        }
        Ok(ClusterMap { own, peers })
    }

    /// The series this node allocates.
    pub(crate) fn own(&self) -> SeriesRange {
        self.own
    }

    /// The peer owning `series`, if one does.
    pub(crate) fn owner_of(&self, series: u32) -> Option<&Peer> {
        self.peers.iter().find(|peer| peer.series.contains(series))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: u32, last: u32) -> SeriesRange {
        SeriesRange::new(first, last).unwrap()
    }

    fn peer(node: &str, first: u32, last: u32) -> Peer {
        Peer {
            node: node.to_owned(),
            url: format!("http://{node}:7200"),
            series: range(first, last),
        }
    }

    #[test]
    fn ranges_are_closed_and_never_hold_zero_or_the_top() {
        assert_eq!(SeriesRange::new(0, 5), None);
        assert_eq!(SeriesRange::new(6, 5), None);
        assert_eq!(SeriesRange::new(1, u32::MAX), None);
        let single = range(7, 7);
        assert!(single.contains(7) && !single.contains(6) && !single.contains(8));
        assert!(range(1, 10).overlaps(range(10, 20)));
        assert!(!range(1, 10).overlaps(range(11, 20)));
        assert_eq!(range(1, 10).to_string(), "[1, 10]");
    }

    #[test]
    fn each_series_has_at_most_one_owner() {
        let map = ClusterMap::new(
            range(1, 100),
            vec![peer("vendor-2", 101, 200), peer("vendor-3", 300, 400)],
        )
        .unwrap();
        assert_eq!(map.owner_of(150).map(|p| p.node.as_str()), Some("vendor-2"));
        assert_eq!(map.owner_of(400).map(|p| p.node.as_str()), Some("vendor-3"));
        assert_eq!(map.owner_of(50), None);
        assert_eq!(map.owner_of(250), None);

        let error = ClusterMap::new(range(1, 100), vec![peer("vendor-2", 100, 200)]).unwrap_err();
        assert!(
            error.contains("vendor-2") && error.contains("[1, 100]"),
            "{error}"
        );
        let error = ClusterMap::new(
            range(1, 100),
            vec![peer("vendor-2", 101, 200), peer("vendor-3", 150, 160)],
        )
        .unwrap_err();
        assert!(
            error.contains("vendor-3") && error.contains("vendor-2"),
            "{error}"
        );
    }
}
