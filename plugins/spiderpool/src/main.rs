//! `spiderpool`: the IPAM plugin without the etcd client; an etcd config is handed over to
//! `spiderpool-etcd` (see `connect`).

use spiderpool::{connect, Spiderpool};

fn main() {
    cni::skel::run(&Spiderpool {
        connect: connect::hand_over,
    })
}
