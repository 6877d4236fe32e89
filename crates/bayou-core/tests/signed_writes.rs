//! Writes signed by their accepting server, verified wherever they arrive,
//! and their authors' permissions checked wherever they execute
//! ([T95 §8]; issue 15). See `bayou_core::auth`.

use std::sync::Arc;

use bayou_core::bundle::{self, ImportError};
use bayou_core::{
    ChunkLimits, Ed25519Authority, ForgedWrite, Item, Keyring, Op, Outcome, ProtocolError, Replica,
    Role, ServerId, Summary, View, WriteAuthority, WriteId, format_entry,
    format_entry_with_outcome,
};

fn s(id: &str) -> ServerId {
    ServerId::new(id).unwrap()
}

/// Fixed secrets: the core draws no randomness, and tests need none.
fn secret(id: &str) -> [u8; 32] {
    [id.as_bytes()[0]; 32]
}

/// A keyring listing A, B and P.
fn keyring() -> Keyring {
    let mut ring = Keyring::new();
    for id in ["A", "B", "P"] {
        ring.insert(s(id), bayou_core::auth::public_key(&secret(id)))
            .unwrap();
    }
    ring
}

/// Nobody but `root` may write keys under `admin/`.
fn authority(id: &str) -> Arc<dyn WriteAuthority> {
    Arc::new(
        Ed25519Authority::new(s(id), &secret(id), keyring())
            .unwrap()
            .with_permissions(Arc::new(|author: &str, key: &[u8]| {
                author == "root" || !key.starts_with(b"admin/")
            })),
    )
}

fn replica(id: &str, role: Role) -> Replica {
    let mut r = Replica::new(s(id), role);
    r.set_authority(Some(authority(id)));
    r
}

fn alice() -> Option<Arc<str>> {
    Some(Arc::from("alice"))
}

fn log(r: &Replica) -> Vec<String> {
    r.log()
        .map(|(c, w)| format_entry_with_outcome(c, &w, &r.outcome(&w.id)))
        .collect()
}

/// Everything `from` would send a receiver at `to`'s summary.
fn items(from: &Replica, to: &Replica) -> Vec<Item> {
    from.items_for(&to.summary()).collect()
}

/// The single write among `items`, for tampering.
fn write_mut(items: &mut [Item]) -> &mut bayou_core::Write {
    match items {
        [Item::Write { write, .. }] => write,
        other => panic!("expected one write, got {other:?}"),
    }
}

/// `b` refuses `items` with `Forged { id, reason }` and holds nothing.
fn assert_refused(b: &mut Replica, items: Vec<Item>, id: WriteId, reason: ForgedWrite) {
    assert_eq!(b.receive(items), Err(ProtocolError::Forged { id, reason }));
    assert_eq!(log(b), Vec::<String>::new());
    assert_eq!(b.vv().get(&s("A")), 0);
    assert_eq!(b.get(b"X", View::Full), None);
    assert!(b.take_persist().is_empty());
}

#[test]
fn a_signed_write_carries_its_author_and_verifies_at_the_receiver() {
    let mut a = replica("A", Role::Secondary);
    let mut b = replica("B", Role::Secondary);
    let id = a.client_write_as(5, Op::put("X", "1"), alice());
    let sent = items(&a, &b);
    let w = match &sent[0] {
        Item::Write { write, .. } => write.clone(),
        _ => unreachable!(),
    };
    assert_eq!(w.author.as_deref(), Some("alice"));
    assert!(w.signature.is_some());
    assert_eq!(authority("B").verify(&w), Ok(()));
    let report = b.receive(sent).unwrap();
    assert_eq!(report.new_writes, 1);
    assert_eq!(log(&b), ["∞:5:A W(X,1) by alice"]);
    assert_eq!(b.tentative_author(&id).map(|a| &**a), Some("alice"));
    assert_eq!(b.get(b"X", View::Full).map(|v| &v[..]), Some(&b"1"[..]));
}

#[test]
fn a_write_with_a_changed_value_is_refused_as_forged() {
    let mut a = replica("A", Role::Secondary);
    let mut b = replica("B", Role::Secondary);
    let id = a.client_write_as(5, Op::put("X", "1"), alice());
    let mut sent = items(&a, &b);
    write_mut(&mut sent).op = Op::put("X", "999");
    assert_refused(&mut b, sent, id, ForgedWrite::BadSignature);
}

#[test]
fn a_write_with_a_changed_author_is_refused_as_forged() {
    let mut a = replica("A", Role::Secondary);
    let mut b = replica("B", Role::Secondary);
    let id = a.client_write_as(5, Op::put("X", "1"), alice());
    let mut sent = items(&a, &b);
    write_mut(&mut sent).author = Some(Arc::from("root"));
    assert_refused(&mut b, sent.clone(), id.clone(), ForgedWrite::BadSignature);
    // Dropping the author is a change too.
    write_mut(&mut sent).author = None;
    assert_refused(&mut b, sent, id, ForgedWrite::BadSignature);
}

#[test]
fn a_write_with_a_changed_stamp_or_server_is_refused_as_forged() {
    let mut a = replica("A", Role::Secondary);
    let mut b = replica("B", Role::Secondary);
    a.client_write_as(5, Op::put("X", "1"), alice());
    let mut sent = items(&a, &b);
    write_mut(&mut sent).id = WriteId::new(6, s("A"));
    assert_refused(
        &mut b,
        sent.clone(),
        WriteId::new(6, s("A")),
        ForgedWrite::BadSignature,
    );
    // Claimed by another server of the keyring: its key does not match.
    write_mut(&mut sent).id = WriteId::new(5, s("P"));
    assert_refused(
        &mut b,
        sent.clone(),
        WriteId::new(5, s("P")),
        ForgedWrite::BadSignature,
    );
    // Claimed by a server the keyring does not know.
    write_mut(&mut sent).id = WriteId::new(5, s("Z"));
    assert_eq!(
        b.receive(sent),
        Err(ProtocolError::Forged {
            id: WriteId::new(5, s("Z")),
            reason: ForgedWrite::UnknownServer(s("Z")),
        })
    );
    assert_eq!(log(&b), Vec::<String>::new());
}

#[test]
fn an_unsigned_write_is_refused_where_a_keyring_is_set() {
    // A comes from an open cluster: no authority, no signature.
    let mut a = Replica::new(s("A"), Role::Secondary);
    let mut b = replica("B", Role::Secondary);
    let id = a.client_write_as(5, Op::put("X", "1"), alice());
    let sent = items(&a, &b);
    assert_refused(&mut b, sent, id, ForgedWrite::Unsigned);
}

#[test]
fn a_forged_write_refuses_the_whole_chunk_before_any_of_it_applies() {
    let mut a = replica("A", Role::Secondary);
    let mut b = replica("B", Role::Secondary);
    a.client_write_as(5, Op::put("X", "1"), alice());
    let forged = a.client_write_as(6, Op::put("Y", "2"), alice());
    let mut sent = items(&a, &b);
    assert_eq!(sent.len(), 2);
    if let Item::Write { write, .. } = &mut sent[1] {
        write.op = Op::put("Y", "666");
    }
    assert_refused(&mut b, sent, forged, ForgedWrite::BadSignature);
    // The honest session delivers both.
    b.receive(items(&a, &b)).unwrap();
    assert_eq!(log(&b), ["∞:5:A W(X,1) by alice", "∞:6:A W(Y,2) by alice"]);
}

#[test]
fn a_tampered_bundle_is_refused_on_import_and_changes_nothing() {
    let mut a = replica("A", Role::Secondary);
    let mut b = replica("B", Role::Secondary);
    a.client_write_as(5, Op::put("X", "1"), alice());
    a.client_write_as(6, Op::put("Y", "2"), alice());
    // One item a chunk: the forged write is in the second chunk, and the
    // first must not be applied either.
    let limits = ChunkLimits {
        items: 1,
        bytes: 1 << 20,
    };
    let files = bundle::export(&mut a, Summary::default(), 1 << 20, limits);
    assert_eq!(files.len(), 1);
    let mut decoded = bundle::decode(&files[0]).unwrap();
    assert_eq!(decoded.chunks.len(), 2);
    let bayou_core::Chunk::Items(items) = &mut decoded.chunks[1] else {
        panic!("expected items");
    };
    write_mut(items).op = Op::put("Y", "666");
    let tampered = bundle::decode(&bundle::encode(&decoded)).unwrap();
    assert_eq!(
        b.import_bundle(&tampered),
        Err(ImportError::Protocol(ProtocolError::Forged {
            id: WriteId::new(6, s("A")),
            reason: ForgedWrite::BadSignature,
        }))
    );
    assert_eq!(log(&b), Vec::<String>::new());
    // The untouched file imports.
    b.import_bundle(&bundle::decode(&files[0]).unwrap())
        .unwrap();
    assert_eq!(log(&b), ["∞:5:A W(X,1) by alice", "∞:6:A W(Y,2) by alice"]);
}

#[test]
fn a_denied_author_executes_as_failed_with_no_effect_at_every_replica() {
    let mut a = replica("A", Role::Secondary);
    let mut b = replica("B", Role::Secondary);
    let mut p = replica("P", Role::Primary { autocommit: true });
    let mallory = Some(Arc::from("mallory"));
    a.client_write_as(5, Op::put("admin/motd", "owned"), mallory.clone());
    a.client_write_as(6, Op::put("notes", "hi"), mallory);
    a.client_write_as(7, Op::put("admin/motd", "welcome"), Some(Arc::from("root")));
    let denied = Outcome::Failed("NOPERM mallory may not write admin/motd".into());
    let tentative = [
        "∞:5:A W(admin/motd,owned) by mallory [failed: NOPERM mallory may not write admin/motd]",
        "∞:6:A W(notes,hi) by mallory",
        "∞:7:A W(admin/motd,welcome) by root",
    ];
    assert_eq!(log(&a), tentative);
    assert_eq!(a.outcome(&WriteId::new(5, s("A"))), denied);
    b.receive(items(&a, &b)).unwrap();
    assert_eq!(log(&b), tentative);
    // Committed at the primary, where it executes again: same outcome.
    p.receive(items(&a, &p)).unwrap();
    assert_eq!(
        log(&p),
        [
            "1:5:A W(admin/motd,owned) by mallory [failed: NOPERM mallory may not write admin/motd]",
            "2:6:A W(notes,hi) by mallory",
            "3:7:A W(admin/motd,welcome) by root",
        ]
    );
    for r in [&a, &b, &p] {
        let full = |key: &[u8]| r.get(key, View::Full).map(|v| v.to_vec());
        assert_eq!(full(b"admin/motd"), Some(b"welcome".to_vec()));
        assert_eq!(full(b"notes"), Some(b"hi".to_vec()));
    }
    assert_eq!(
        p.get(b"admin/motd", View::Committed).map(|v| &v[..]),
        Some(&b"welcome"[..])
    );
    // The commits reach A and B, which execute the write once more.
    a.receive(items(&p, &a)).unwrap();
    assert_eq!(log(&a), log(&p));
    assert_eq!(a.outcome(&WriteId::new(5, s("A"))), denied);
}

#[test]
fn a_keyring_file_parses_and_its_bad_lines_are_clear_errors() {
    let pa = bayou_core::auth::public_key(&secret("A"));
    let text = format!(
        "# the cluster\n\n{}  # primary's peer\n",
        bayou_core::auth::keyring_line(&s("A"), &pa)
    );
    let ring = Keyring::parse(&text).unwrap();
    assert_eq!(ring.len(), 1);
    assert_eq!(ring.get(&s("A")), Some(pa));
    let err = |t: &str| Keyring::parse(t).unwrap_err().to_string();
    assert_eq!(
        err("A"),
        "keyring line 1: expected `<server-id> <hex public key>`, found \"A\""
    );
    assert_eq!(
        err("# x\nA zz"),
        "keyring line 2: \"zz\" is not 64 hex digits (a 32-byte key)"
    );
    assert_eq!(
        err(&format!("a-b {}", hex(&pa))),
        "keyring line 1: server id \"a-b\" must hold only ASCII letters and digits"
    );
    let pb = bayou_core::auth::public_key(&secret("B"));
    assert_eq!(
        err(&format!("A {}\nA {}", hex(&pa), hex(&pb))),
        "keyring line 2: A is listed twice with different keys"
    );
}

#[test]
fn an_authority_refuses_a_keyring_that_gives_its_server_another_key() {
    let mut ring = Keyring::new();
    ring.insert(s("A"), bayou_core::auth::public_key(&secret("B")))
        .unwrap();
    assert_eq!(
        Ed25519Authority::new(s("A"), &secret("A"), ring)
            .unwrap_err()
            .to_string(),
        "the keyring lists A with another public key than its signing key's: fix the keyring or use the right --signing-key"
    );
}

#[test]
fn the_log_shows_an_author_only_when_one_is_set() {
    let mut open = Replica::new(s("A"), Role::Secondary);
    open.client_write(5, Op::put("X", "1"));
    open.client_write_as(6, Op::put("Y", "2"), alice());
    let entries: Vec<String> = open.log().map(|(c, w)| format_entry(c, &w)).collect();
    assert_eq!(entries, ["∞:5:A W(X,1)", "∞:6:A W(Y,2) by alice"]);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
