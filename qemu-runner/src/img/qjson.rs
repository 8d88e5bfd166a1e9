//! JSON text as qemu-img prints it (`qobject_to_json_pretty`), so `--output=json` output can be
//! compared with qemu-img's byte for byte, not only once parsed.
//!
//! QEMU's dictionaries are hash tables (`QDict`: 512 buckets, gdbm's `tdb_hash`, each bucket a
//! list new keys are put at the head of) and print in table order: by bucket, and inside one
//! bucket the key inserted last first. A [`Value`] object's keys must therefore be inserted in
//! the order QEMU's QAPI visitor adds them (the schema's field order). Four spaces of indent;
//! empty objects and arrays still break their line; strings escape everything outside
//! printable ASCII as `\uXXXX`.

use serde_json::Value;

/// QEMU's `QDICT_BUCKET_MAX`.
const BUCKETS: u32 = 512;

/// gdbm's hash as QEMU's qdict.c uses it.
fn tdb_hash(key: &str) -> u32 {
    let mut value = 0x238F_13AFu32.wrapping_mul(key.len() as u32);
    for (i, b) in key.bytes().enumerate() {
        value = value.wrapping_add(u32::from(b) << ((i * 5) % 24));
    }
    1_103_515_243u32.wrapping_mul(value).wrapping_add(12345)
}

/// `v` as qemu-img prints it (no newline at the end).
pub fn pretty(v: &Value) -> String {
    let mut out = String::new();
    write(&mut out, v, 0);
    out
}

fn indent(out: &mut String, level: usize) {
    out.push('\n');
    for _ in 0..level {
        out.push_str("    ");
    }
}

fn write(out: &mut String, v: &Value, level: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, level + 1);
                write(out, item, level + 1);
            }
            indent(out, level);
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<(u32, usize, &String, &Value)> =
                map.iter().enumerate().map(|(i, (k, v))| (tdb_hash(k) % BUCKETS, i, k, v)).collect();
            // By bucket; inside a bucket the last inserted first.
            keys.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            out.push('{');
            for (i, (_, _, k, v)) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, level + 1);
                string(out, k);
                out.push_str(": ");
                write(out, v, level + 1);
            }
            indent(out, level);
            out.push('}');
        }
    }
}

fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04X}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_qemus_table_order() {
        // As qemu-img 10.0.2 prints a qcow2's info (children added after the node's fields,
        // sharing bucket 206 with backing-filename-format, so printed before it).
        let v = serde_json::json!({
            "filename": "t", "format": "qcow2", "dirty-flag": false, "actual-size": 1,
            "virtual-size": 2, "cluster-size": 3, "backing-filename": "b",
            "full-backing-filename": "b", "backing-filename-format": "qcow2", "children": [],
        });
        let keys: Vec<String> = pretty(&v).lines().filter_map(|l| l.trim().split('"').nth(1).map(str::to_string)).collect();
        assert_eq!(
            keys,
            [
                "children", "backing-filename-format", "virtual-size", "filename", "cluster-size", "format",
                "actual-size", "full-backing-filename", "backing-filename", "dirty-flag"
            ]
        );
        assert_eq!(pretty(&serde_json::json!({"a": {}, "b": []})), "{\n    \"a\": {\n    },\n    \"b\": [\n    ]\n}");
        assert_eq!(pretty(&serde_json::json!("é\"\u{1F600}")), "\"\\u00E9\\\"\\uD83D\\uDE00\"");
    }
}
