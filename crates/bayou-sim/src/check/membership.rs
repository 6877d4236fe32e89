//! The committed membership ([P97 §4.3]), replayed by the checkers from
//! the global committed order: every CSN made durable anywhere, with the
//! operation its accepting server accepted. Membership writes execute the
//! same way at every server (a creation binds a name not yet bound, a
//! retirement marks its own server retired, a handoff to a live member
//! names the next primary), so this small model says, for every CSN,
//! which server must have assigned it ([`super::primary_epochs`]) and
//! which creation a name is bound to ([`super::identity`]), independently
//! of any one replica's state.

use std::collections::BTreeMap;

use bayou_core::member::MemberOp;
use bayou_core::{Csn, Op, ServerId, WriteId};

/// The membership table of the committed order up to [`Self::upto`].
#[derive(Debug, Clone, Default)]
pub struct CommittedMembership {
    /// The primary named by the last handoff that took effect; `None`
    /// while the server started as primary still is.
    pub primary: Option<ServerId>,
    /// Every name bound so far: its creation write, and whether it retired.
    pub members: BTreeMap<ServerId, (WriteId, bool)>,
    /// The CSNs replayed so far.
    pub upto: Csn,
}

impl CommittedMembership {
    /// Replays the committed write `id` (the next CSN) with operation `op`,
    /// as `bayou_core::member` executes it.
    pub fn apply(&mut self, id: &WriteId, op: &Op) {
        self.upto += 1;
        let Op::Member(m) = op else { return };
        match m {
            MemberOp::Create { server, .. } => {
                // A creation of a bound (or retired) name does nothing.
                self.members
                    .entry(server.clone())
                    .or_insert((id.clone(), false));
            }
            MemberOp::Retire { server } if &id.server == server => {
                if let Some(m) = self.members.get_mut(server) {
                    m.1 = true;
                }
            }
            MemberOp::Handoff { to } => {
                if self.members.get(to).is_some_and(|m| !m.1) {
                    self.primary = Some(to.clone());
                }
            }
            MemberOp::Retire { .. } | MemberOp::Address { .. } => {}
        }
    }

    /// The creation write `server`'s name is bound to, if any.
    pub fn bound(&self, server: &ServerId) -> Option<&WriteId> {
        self.members.get(server).map(|(c, _)| c)
    }
}
