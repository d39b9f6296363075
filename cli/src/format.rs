//! `meridian consume --format`: kcat's output format (`-f`), parsed once and rendered per
//! message. Pure.
//!
//! `%t` topic, `%p` partition, `%o` offset, `%k` key, `%v` value, `%K` key length, `%S`
//! value length (-1 for null), `%T` producer timestamp (ms), `%h` headers (`k=v` comma
//! separated; a null value as `k`), `%r` the region that first wrote it, `%%` a percent
//! sign; `\n`, `\t`, `\r` and `\\` escapes. Nothing is added: end the format with `\n` for
//! one message per line, as with kcat.

use meridian_client::ConsumedMessage;

/// One piece of a format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    KeyLength,
    ValueLength,
    Timestamp,
    Headers,
    Origin,
}

/// Parses a format, naming what is wrong in it.
pub(crate) fn parse(format: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = Vec::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        let piece = match c {
            '%' => match chars.next() {
                Some('%') => {
                    text.push(b'%');
                    continue;
                }
                Some('t') => Piece::Topic,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('k') => Piece::Key,
                Some('v') => Piece::Value,
                Some('K') => Piece::KeyLength,
                Some('S') => Piece::ValueLength,
                Some('T') => Piece::Timestamp,
                Some('h') => Piece::Headers,
                Some('r') => Piece::Origin,
                Some(other) => {
                    return Err(format!(
                        "%{other} is not a format token: use %t %p %o %k %v %K %S %T %h %r or %%"
                    ));
                }
                None => {
                    return Err("the format ends with a lone %: write %% for a percent sign".into());
                }
            },
            '\\' => {
                let escaped = match chars.next() {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    Some('\\') => '\\',
                    Some(other) => {
                        return Err(format!(
                            "\\{other} is not an escape: use \\n \\t \\r or \\\\"
                        ));
                    }
                    None => return Err("the format ends with a lone \\".into()),
                };
                let mut buf = [0; 4];
                text.extend_from_slice(escaped.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            c => {
                let mut buf = [0; 4];
                text.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(piece);
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// `m` as `pieces` say, appended to `out`.
pub(crate) fn render(pieces: &[Piece], m: &ConsumedMessage, out: &mut Vec<u8>) {
    let length = |b: &Option<bytes::Bytes>| b.as_ref().map_or(-1, |b| b.len() as i64);
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.extend_from_slice(t),
            Piece::Topic => out.extend_from_slice(m.topic.as_bytes()),
            Piece::Partition => out.extend_from_slice(m.partition.to_string().as_bytes()),
            Piece::Offset => out.extend_from_slice(m.offset.to_string().as_bytes()),
            Piece::Key => out.extend_from_slice(m.key.as_deref().unwrap_or_default()),
            Piece::Value => out.extend_from_slice(m.value.as_deref().unwrap_or_default()),
            Piece::KeyLength => out.extend_from_slice(length(&m.key).to_string().as_bytes()),
            Piece::ValueLength => out.extend_from_slice(length(&m.value).to_string().as_bytes()),
            Piece::Timestamp => out.extend_from_slice(m.timestamp_ms.to_string().as_bytes()),
            Piece::Headers => {
                for (i, (name, value)) in m.headers.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(name.as_bytes());
                    if let Some(v) = value {
                        out.push(b'=');
                        out.extend_from_slice(v);
                    }
                }
            }
            Piece::Origin => out.extend_from_slice(m.origin_region.as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn message() -> ConsumedMessage {
        ConsumedMessage {
            topic: "orders".into(),
            partition: 2,
            offset: 41,
            key: Some(Bytes::from_static(b"customer-1")),
            value: None,
            headers: vec![
                ("trace".into(), Some(Bytes::from_static(b"abc"))),
                ("flag".into(), None),
                ("trace".into(), Some(Bytes::from_static(b"def"))),
            ],
            timestamp_ms: 1_700_000_000_123,
            append_time_ms: 1_700_000_000_200,
            origin_region: "us-east".into(),
            origin_position: 7,
        }
    }

    fn rendered(format: &str) -> String {
        let mut out = Vec::new();
        render(&parse(format).unwrap(), &message(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_token_renders_as_kcat_would() {
        assert_eq!(
            rendered("%t/%p@%o %k=%v (%K,%S) %T [%h] from %r 100%%\\n"),
            "orders/2@41 customer-1= (10,-1) 1700000000123 [trace=abc,flag,trace=def] from us-east 100%\n"
        );
        assert_eq!(rendered("\\t%k\\\\"), "\tcustomer-1\\");
        assert_eq!(rendered("plain"), "plain");
    }

    #[test]
    fn a_bad_format_is_refused_naming_what_is_wrong() {
        assert!(
            parse("%x")
                .unwrap_err()
                .contains("%x is not a format token")
        );
        assert!(parse("50%").unwrap_err().contains("lone %"));
        assert!(parse("\\q").unwrap_err().contains("\\q is not an escape"));
    }
}
