//! `spiderpool-etcd`: the IPAM plugin with the etcd client. `spiderpool` hands etcd configs
//! over to it; it serves file store configs too.

use spiderpool::{connect, Spiderpool};

fn main() {
    cni::skel::run(&Spiderpool {
        connect: connect::etcd_client,
    })
}
