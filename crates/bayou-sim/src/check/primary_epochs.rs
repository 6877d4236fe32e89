//! One assigner per CSN ([P97 §4.3], primary handoff; [T95 §6]: the
//! primary alone commits): the handoff writes cut the committed order into
//! epochs, the first assigned by the server started as primary, each next
//! one by the server the epoch's closing handoff names. A CSN assigned by
//! any other server (an old primary that went on after its handoff
//! committed, a new one that started before it held that commit) is a
//! second assigner for a range, even where the two happened to agree.
//!
//! Who assigned a CSN is observable: commits leave a server only once they
//! are durable there (sessions and bundles flush first), so the first
//! server at which a CSN becomes durable is its assigner. Who *should*
//! have is the committed membership replayed up to the CSN before it
//! ([`super::membership`]).

use bayou_core::{Csn, ServerId};

use super::membership::CommittedMembership;

/// CSN `csn`, first made durable at `assigner`, was assigned by the primary
/// of its epoch: `membership` is the committed membership up to `csn - 1`,
/// `first` the server started as primary ([P97 §4.3]).
pub fn assigned_in_epoch(
    csn: Csn,
    assigner: &ServerId,
    membership: &CommittedMembership,
    first: &ServerId,
) -> Result<(), String> {
    let owner = membership.primary.as_ref().unwrap_or(first);
    if assigner != owner {
        return Err(format!(
            "one assigner per CSN violated: CSN {csn} was assigned by {assigner}, but the committed order up to CSN {} names {owner} as the primary",
            membership.upto
        ));
    }
    Ok(())
}
