//! Comparing memos. A memo is a proto3-serialized `temporal.api.common.v1.Memo`
//! (`map<string, Payload> fields = 1`, and each `Payload` holds `map<string, bytes>
//! metadata = 1`, `bytes data = 2`). Go's protobuf marshals map entries in random order,
//! and Temporal serializes the memo anew for every write (`serializeMemo`, once per store
//! in dual mode, again when a visibility task is replayed), so the same memo reaches two
//! stores as different bytes. vismig copies memo bytes unchanged; verify compares them
//! by content: the map entries in any order.

/// Whether two memos hold the same entries. No memo, an empty one and an empty message
/// are the same. Bytes that do not parse as a Memo must be identical.
pub fn equivalent(a: Option<&[u8]>, b: Option<&[u8]>) -> bool {
    let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
    if a == b {
        return true;
    }
    match (canonical(a), canonical(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// One field of a message: its tag (field number and wire type) and its value bytes
/// (the payload of a length-delimited field, the raw bytes of any other).
type Field<'a> = (u64, &'a [u8]);

const MAP_ENTRIES: u64 = 1 << 3 | 2; // field 1, length-delimited: Memo.fields, Payload.metadata
const ENTRY_VALUE: u64 = 2 << 3 | 2; // field 2 of a map entry: the value

/// A map entry: its other fields (the key) and its values in canonical form.
type Entry<'a> = (Vec<Field<'a>>, Vec<Vec<Field<'a>>>);

/// The memo as its entries, sorted, each with its Payload's metadata entries sorted.
fn canonical(memo: &[u8]) -> Option<Vec<Entry<'_>>> {
    let mut out = Vec::new();
    for (tag, value) in fields(memo)? {
        if tag != MAP_ENTRIES {
            return None;
        }
        let (mut key, mut values) = (Vec::new(), Vec::new());
        for (tag, v) in fields(value)? {
            if tag == ENTRY_VALUE {
                values.push(canonical_payload(v)?);
            } else {
                key.push((tag, v));
            }
        }
        out.push((key, values));
    }
    out.sort();
    Some(out)
}

/// A Payload's fields with its metadata map entries sorted (and first).
fn canonical_payload(payload: &[u8]) -> Option<Vec<Field<'_>>> {
    let all = fields(payload)?;
    let mut metadata: Vec<Field<'_>> = all.iter().copied().filter(|(t, _)| *t == MAP_ENTRIES).collect();
    metadata.sort();
    metadata.extend(all.into_iter().filter(|(t, _)| *t != MAP_ENTRIES));
    Some(metadata)
}

/// Splits a message into its fields; None when the bytes are not protobuf wire format.
fn fields(mut buf: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (tag, n) = varint(buf)?;
        buf = &buf[n..];
        let len = match tag & 7 {
            0 => varint(buf)?.1,
            1 => 8,
            2 => {
                let (len, n) = varint(buf)?;
                buf = &buf[n..];
                usize::try_from(len).ok()?
            }
            5 => 4,
            _ => return None,
        };
        if tag >> 3 == 0 || buf.len() < len {
            return None;
        }
        out.push((tag, &buf[..len]));
        buf = &buf[len..];
    }
    Some(out)
}

/// A base-128 varint: its value and how many bytes it took.
fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(field: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![field << 3 | 2, u8::try_from(value.len()).unwrap()];
        out.extend_from_slice(value);
        out
    }

    fn payload(metadata: &[(&str, &str)], data: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in metadata {
            out.extend(len_field(1, &[len_field(1, k.as_bytes()), len_field(2, v.as_bytes())].concat()));
        }
        out.extend(len_field(2, data.as_bytes()));
        out
    }

    fn memo(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|(k, p)| len_field(1, &[len_field(1, k.as_bytes()), len_field(2, p)].concat()))
            .collect()
    }

    #[test]
    fn map_entries_in_another_order_are_the_same_memo() {
        let owner = payload(&[("encoding", "json/plain")], "\"vismig-e2e\"");
        let n = payload(&[("encoding", "json/plain"), ("messageType", "x")], "3");
        let n_reordered = payload(&[("messageType", "x"), ("encoding", "json/plain")], "3");
        let a = memo(&[("owner", owner.clone()), ("n", n.clone())]);
        let b = memo(&[("n", n_reordered), ("owner", owner.clone())]);
        assert_ne!(a, b);
        assert!(equivalent(Some(&a), Some(&b)));
        assert!(equivalent(Some(&b), Some(&a)));
    }

    #[test]
    fn different_values_keys_or_entries_differ() {
        let one = payload(&[("encoding", "json/plain")], "1");
        let two = payload(&[("encoding", "json/plain")], "2");
        let a = memo(&[("n", one.clone()), ("m", two.clone())]);
        assert!(!equivalent(Some(&a), Some(&memo(&[("n", two.clone()), ("m", one.clone())]))));
        assert!(!equivalent(Some(&a), Some(&memo(&[("n", one.clone()), ("k", two.clone())]))));
        assert!(!equivalent(Some(&a), Some(&memo(&[("n", one.clone())]))));
        assert!(!equivalent(Some(&a), None));
    }

    #[test]
    fn no_memo_and_an_empty_one_are_the_same_and_garbage_must_match_exactly() {
        assert!(equivalent(None, Some(&[])));
        assert!(equivalent(Some(&[0xff, 0x01]), Some(&[0xff, 0x01])));
        assert!(!equivalent(Some(&[0xff, 0x01]), Some(&[0xff, 0x02])));
    }

    #[test]
    fn temporal_dual_writes_of_one_memo() {
        // The same memo as Temporal v1.32 wrote it to the primary and to the secondary
        // PostgreSQL store in dual mode (the e2e test's workload; bytes from the tables).
        let hex = |s: &str| {
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect::<Vec<u8>>()
        };
        let primary = hex(
            "0a200a016e121b0a160a08656e636f64696e67120a6a736f6e2f706c61696e1201300a2f0a056f776e657212260a160a08656e636f64696e67120a6a736f6e2f706c61696e120c227669736d69672d653265220a270a056261746368121e0a160a08656e636f64696e67120a6a736f6e2f706c61696e1204227731220a2d0a046b696e6412250a160a08656e636f64696e67120a6a736f6e2f706c61696e120b22636f6d706c6574656422",
        );
        let secondary = hex(
            "0a2d0a046b696e6412250a160a08656e636f64696e67120a6a736f6e2f706c61696e120b22636f6d706c65746564220a200a016e121b0a160a08656e636f64696e67120a6a736f6e2f706c61696e1201300a2f0a056f776e657212260a160a08656e636f64696e67120a6a736f6e2f706c61696e120c227669736d69672d653265220a270a056261746368121e0a160a08656e636f64696e67120a6a736f6e2f706c61696e120422773122",
        );
        assert_ne!(primary, secondary);
        assert!(equivalent(Some(&primary), Some(&secondary)));
        let mut changed = secondary.clone();
        let last = changed.len() - 2;
        changed[last] = b'2'; // "w1" -> "w2"
        assert!(!equivalent(Some(&primary), Some(&changed)));
    }
}
