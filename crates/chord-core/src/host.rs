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

use crate::id::{Id, IdSpace};
use crate::node::{Command, Config, Message, Node, NodeRef, Time, Timer};

/// The virtual-node ids of the process at `addr`: `SHA-1("addr#i") mod 2^m`.
pub fn virtual_ids(space: IdSpace, addr: &impl Display, v: usize) -> Vec<Id> {
    (0..v)
        .map(|i| space.hash(format!("{addr}#{i}").as_bytes()))
        .collect()
}

/// The Chord cores hosted by one process.
#[derive(Debug)]
pub struct VirtualHost<A, V> {
    addr: A,
    nodes: BTreeMap<Id, Node<A, V>>,
}

impl<A: Clone + Ord + Debug, V: Clone> VirtualHost<A, V> {
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
    pub fn nodes(&self) -> &BTreeMap<Id, Node<A, V>> {
        &self.nodes
    }

    /// Mutable access to one virtual node (to call `create`, `join`, `lookup`...).
    pub fn node_mut(&mut self, id: Id) -> Option<&mut Node<A, V>> {
        self.nodes.get_mut(&id)
    }

    /// Delivers a message addressed to virtual node `to`; unknown ids are dropped
    /// (the sender will time out, as for a crashed node).
    pub fn handle_message(&mut self, now: Time, to: Id, from: NodeRef<A>, msg: Message<A, V>) {
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
    pub fn poll_command(&mut self) -> Option<(Id, Command<A, V>)> {
        self.nodes
            .iter_mut()
            .find_map(|(id, n)| n.poll_command().map(|c| (*id, c)))
    }
}
