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
    /// The primary the table names (the founder, then the server named by
    /// the last handoff that took effect, or the successor of a primary
    /// that retired); `None` while the server started as primary is.
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
                if self.members.contains_key(server) {
                    return;
                }
                self.members.insert(server.clone(), (id.clone(), false));
                // The founder creates itself: the table names it primary.
                if &id.server == server && self.primary.is_none() {
                    self.primary = Some(server.clone());
                }
            }
            MemberOp::Retire { server } if &id.server == server => {
                let Some(m) = self.members.get_mut(server) else {
                    return;
                };
                if m.1 {
                    return;
                }
                m.1 = true;
                // A primary that retires (a handoff to it committed before
                // it knew) passes the role to the first live member by name.
                if self.primary.as_ref() == Some(server)
                    && let Some((next, _)) = self
                        .members
                        .iter()
                        .find(|(s, (_, retired))| *s != server && !retired)
                {
                    self.primary = Some(next.clone());
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
