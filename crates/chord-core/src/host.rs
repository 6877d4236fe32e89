//! Many virtual nodes behind one transport address.
//!
//! SIGCOMM §6.2 balances load by running `v` *virtual nodes* per physical node,
//! each with its own id; ids are `SHA-1(address ‖ index)` so a node cannot choose
//! them (§7). A [`VirtualHost`] owns the [`Node`] cores of one process and
//! dispatches inputs by destination id. Every output is tagged with the id of the
//! virtual node that produced it, so the driver knows the sender of a `Send` and
//! which core a timer belongs to.

use std::collections::BTreeMap;
use std::fmt::{Debug, Display};
use std::net::SocketAddr;

use crate::id::{Id, IdSpace};
use crate::node::{Command, Config, Message, Node, NodeRef, Time, Timer};

/// The most virtual nodes one process may run; ids bound to an address
/// ([`id_is_bound`]) are looked for among this many.
pub const MAX_VIRTUAL_NODES: usize = 64;

/// What a node's ring position is bound to, so a node cannot place itself
/// at a point of its choosing (SIGCOMM §7 and the Sybil discussion of ToN
/// §VI: ids are `SHA-1` of the node's address, so choosing an id means
/// controlling the address that hashes to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdBinding {
    /// Ids are whatever a node claims (`--id`); for experiments only.
    None,
    /// An id is `SHA-1("ip:port")` with one virtual node, or
    /// `SHA-1("ip:port#i")`, `i < 64`, with several: one address gives at
    /// most 65 positions, and an attacker needs a listening port per try.
    #[default]
    Address,
    /// An id is `SHA-1("ip")` or `SHA-1("ip#i")`, `i < 64`: the Chord
    /// paper's choice; one process per IP address, so trying many positions
    /// costs many IP addresses rather than many ports.
    Host,
}

impl IdBinding {
    /// The text the ids of a process at `addr` are hashed from.
    fn base(self, addr: &SocketAddr) -> String {
        match self {
            IdBinding::Host => addr.ip().to_string(),
            IdBinding::None | IdBinding::Address => addr.to_string(),
        }
    }
}

/// The ids of the `v` virtual nodes of the process at `addr` under
/// `binding` (`None` binds like `Address`): `SHA-1(base)` for one,
/// `SHA-1("base#i")` for several.
pub fn bound_ids(space: IdSpace, binding: IdBinding, addr: &SocketAddr, v: usize) -> Vec<Id> {
    let base = binding.base(addr);
    if v <= 1 {
        vec![space.hash(base.as_bytes())]
    } else {
        virtual_ids(space, &base, v)
    }
}

/// Whether `id` is one a process at `addr` may hold under `binding`: its
/// single id or one of its first [`MAX_VIRTUAL_NODES`] virtual ids. Pure
/// (at most 65 SHA-1s); a driver caches the pairs it has checked.
pub fn id_is_bound(space: IdSpace, binding: IdBinding, id: Id, addr: &SocketAddr) -> bool {
    if binding == IdBinding::None {
        return true;
    }
    let base = binding.base(addr);
    space.hash(base.as_bytes()) == id
        || (0..MAX_VIRTUAL_NODES).any(|i| space.hash(format!("{base}#{i}").as_bytes()) == id)
}

/// The virtual-node ids of the process at `addr`: `SHA-1("addr#i") mod 2^m`.
pub fn virtual_ids(space: IdSpace, addr: &impl Display, v: usize) -> Vec<Id> {
    (0..v)
        .map(|i| space.hash(format!("{addr}#{i}").as_bytes()))
        .collect()
}

/// The Chord cores hosted by one process.
#[derive(Debug)]
pub struct VirtualHost<A> {
    addr: A,
    nodes: BTreeMap<Id, Node<A>>,
}

impl<A: Clone + Ord + Debug> VirtualHost<A> {
    /// A host at `addr` with one virtual node per id in `ids`; `seed` seeds each
    /// core (mixed with its index).
    pub fn new(cfg: &Config, addr: A, ids: &[Id], seed: u64) -> Self {
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let me = NodeRef {
                    id: *id,
                    addr: addr.clone(),
                };
                (
                    *id,
                    Node::new(
                        cfg.clone(),
                        me,
                        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64,
                    ),
                )
            })
            .collect();
        VirtualHost { addr, nodes }
    }

    /// The transport address shared by all virtual nodes.
    pub fn addr(&self) -> &A {
        &self.addr
    }

    /// The hosted virtual nodes by id.
    pub fn nodes(&self) -> &BTreeMap<Id, Node<A>> {
        &self.nodes
    }

    /// Mutable access to one virtual node (to call `create`, `join`, `lookup`...).
    pub fn node_mut(&mut self, id: Id) -> Option<&mut Node<A>> {
        self.nodes.get_mut(&id)
    }

    /// Delivers a message addressed to virtual node `to`; unknown ids are dropped
    /// (the sender will time out, as for a crashed node).
    pub fn handle_message(&mut self, now: Time, to: Id, from: NodeRef<A>, msg: Message<A>) {
        if let Some(n) = self.nodes.get_mut(&to) {
            n.handle_message(now, from, msg);
        }
    }

    /// Fires a timer of virtual node `vnode`.
    pub fn handle_timer(&mut self, now: Time, vnode: Id, timer: Timer) {
        if let Some(n) = self.nodes.get_mut(&vnode) {
            n.handle_timer(now, timer);
        }
    }

    /// The next output of any hosted node, tagged with its id.
    pub fn poll_command(&mut self) -> Option<(Id, Command<A>)> {
        self.nodes
            .iter_mut()
            .find_map(|(id, n)| n.poll_command().map(|c| (*id, c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::LookupMode;
    use std::collections::VecDeque;

    /// Reference: SIGCOMM §6.2 (virtual nodes). Two processes with three
    /// virtual nodes each form one six-member ring through a tiny in-order
    /// driver, and a lookup from any virtual node ends at successor(key).
    type Envelope = (NodeRef<u32>, NodeRef<u32>, Message<u32>);

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn virtual_nodes_of_two_hosts_form_one_ring() {
        let space = IdSpace::new(32).unwrap();
        let mut cfg = Config::new(space);
        cfg.successors = 2;
        let mut hosts: Vec<VirtualHost<u32>> = (0..2u32)
            .map(|a| VirtualHost::new(&cfg, a, &virtual_ids(space, &a, 3), a as u64))
            .collect();
        let all: Vec<NodeRef<u32>> = hosts
            .iter()
            .flat_map(|h| h.nodes().values().map(|n| n.me().clone()))
            .collect();
        let mut now = 0;
        hosts[0].node_mut(all[0].id).unwrap().create(now);
        for n in all.iter().skip(1) {
            hosts[n.addr as usize]
                .node_mut(n.id)
                .unwrap()
                .join(now, all[0].clone());
        }
        // Driver: messages delivered in order after 1 ms; timers in a list.
        let mut msgs: VecDeque<Envelope> = VecDeque::new();
        let mut timers: Vec<(Time, u32, Id, Timer)> = Vec::new();
        let mut done = Vec::new();
        for _round in 0..200_000 {
            for h in 0..hosts.len() {
                while let Some((vid, cmd)) = hosts[h].poll_command() {
                    let from = NodeRef {
                        id: vid,
                        addr: h as u32,
                    };
                    match cmd {
                        Command::Send { to, msg } => msgs.push_back((from, to, msg)),
                        Command::SetTimer { timer, at } => timers.push((at, h as u32, vid, timer)),
                        Command::LookupDone { result, key, .. } => done.push((key, result)),
                        _ => {}
                    }
                }
            }
            if let Some((from, to, msg)) = msgs.pop_front() {
                now += 1;
                hosts[to.addr as usize].handle_message(now, to.id, from, msg);
            } else {
                timers.sort_by_key(|t| std::cmp::Reverse(t.0));
                let Some((at, h, vid, t)) = timers.pop() else {
                    break;
                };
                now = now.max(at);
                hosts[h as usize].handle_timer(now, vid, t);
            }
            if now > 60_000 {
                break;
            }
        }
        let mut ids: Vec<Id> = all.iter().map(|n| n.id).collect();
        ids.sort();
        for h in &hosts {
            for n in h.nodes().values() {
                let i = ids.iter().position(|x| *x == n.id()).unwrap();
                assert_eq!(n.successor().id, ids[(i + 1) % ids.len()]);
                assert_eq!(
                    n.predecessor().unwrap().id,
                    ids[(i + ids.len() - 1) % ids.len()]
                );
            }
        }
        let key = space.hash(b"some key");
        let origin = all[4].clone();
        hosts[origin.addr as usize]
            .node_mut(origin.id)
            .unwrap()
            .lookup(now, key, LookupMode::Recursive);
        for _ in 0..1000 {
            for h in 0..hosts.len() {
                while let Some((vid, cmd)) = hosts[h].poll_command() {
                    let from = NodeRef {
                        id: vid,
                        addr: h as u32,
                    };
                    match cmd {
                        Command::Send { to, msg } => msgs.push_back((from, to, msg)),
                        Command::LookupDone { result, key, .. } => done.push((key, result)),
                        _ => {}
                    }
                }
            }
            let Some((from, to, msg)) = msgs.pop_front() else {
                break;
            };
            now += 1;
            hosts[to.addr as usize].handle_message(now, to.id, from, msg);
        }
        let want = *ids.iter().find(|x| **x >= key).unwrap_or(&ids[0]);
        let (_, res) = done
            .iter()
            .find(|(k, _)| *k == key)
            .expect("lookup finished");
        assert_eq!(res.as_ref().unwrap().owner.id, want);
    }
}

#[cfg(test)]
mod binding_tests {
    use super::*;

    #[test]
    fn ids_are_bound_to_the_address_they_hash_from() {
        let space = IdSpace::default();
        let a: SocketAddr = "127.0.0.1:8001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:8002".parse().unwrap();
        let one = bound_ids(space, IdBinding::Address, &a, 1)[0];
        assert_eq!(one, space.hash(b"127.0.0.1:8001"));
        assert!(id_is_bound(space, IdBinding::Address, one, &a));
        assert!(!id_is_bound(space, IdBinding::Address, one, &b));
        // Virtual nodes: the same ids virtual_ids gives, each bound.
        let many = bound_ids(space, IdBinding::Address, &a, 8);
        assert_eq!(many, virtual_ids(space, &a, 8));
        assert!(
            many.iter()
                .all(|id| id_is_bound(space, IdBinding::Address, *id, &a))
        );
        // A chosen point of the ring is not.
        let chosen = space.hash(b"just before the key I want");
        assert!(!id_is_bound(space, IdBinding::Address, chosen, &a));
        assert!(id_is_bound(space, IdBinding::None, chosen, &a));
    }

    #[test]
    fn host_binding_ignores_the_port() {
        let space = IdSpace::default();
        let a: SocketAddr = "10.0.0.7:8001".parse().unwrap();
        let b: SocketAddr = "10.0.0.7:9999".parse().unwrap();
        let id = bound_ids(space, IdBinding::Host, &a, 1)[0];
        assert_eq!(id, space.hash(b"10.0.0.7"));
        assert!(id_is_bound(space, IdBinding::Host, id, &b));
        let port_bound = bound_ids(space, IdBinding::Address, &a, 1)[0];
        assert!(!id_is_bound(space, IdBinding::Host, port_bound, &a));
    }
}
