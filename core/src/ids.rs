//! Typed ids into the cluster's arenas: objects refer to each other by id, never by reference.

use serde::Serialize;

macro_rules! id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        pub struct $name(pub u32);

        impl $name {
            /// The arena index.
            pub fn idx(self) -> usize {
                self.0 as usize
            }
        }
    };
}

id!(
    /// A node.
    NodeId
);
id!(
    /// A pod.
    PodId
);
id!(
    /// A network namespace.
    NetnsId
);
id!(
    /// A network device (the kernel's `ifindex`, unique cluster-wide here).
    IfIndex
);
id!(
    /// A layer-2 segment outside any node (a VPC subnet, the internet side of a gateway).
    SegmentId
);
id!(
    /// A Service.
    ServiceId
);
