//! Generators of frontend wire traffic for the protocol's fuzz tests, and a blocking exchange
//! with a server: a startup (valid, another protocol version, an SSL, GSS or cancel request, a
//! bad length, garbage), then frontend messages (well-formed ones with random fields around
//! the statements a test names, unknown type bytes, wrong lengths, truncations, random bytes).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use proptest::prelude::*;

fn cstr(s: &[u8]) -> Vec<u8> {
    let mut out = s.to_vec();
    out.push(0);
    out
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn startup_packet(version: i32, params: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (name, value) in params {
        body.extend(cstr(name));
        body.extend(cstr(value));
    }
    body.push(0);
    let mut out = (body.len() as i32 + 4).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// One of `statements`, or random bytes as a statement (no `00`: that would end its string
/// early and leave the rest of the body to be read as the message's other fields).
fn sql(statements: &'static [&'static str]) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => prop::sample::select(statements).prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(1u8.., 0..16),
    ]
    .boxed()
}

fn short_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..12)
}

/// A frontend message with well-formed framing and random contents; with `garbled`, contents
/// that contradict themselves too (more parameters or types announced than follow, a type
/// byte the protocol does not have, a body another type expects).
fn framed_message(statements: &'static [&'static str], garbled: bool) -> BoxedStrategy<Vec<u8>> {
    let lie = if garbled {
        any::<bool>().boxed()
    } else {
        Just(false).boxed()
    };
    let name = prop::sample::select(vec!["", "s1", "p1"]).prop_map(|s| s.as_bytes().to_vec());
    let bind = (
        name.clone(),
        name.clone(),
        prop::collection::vec(-1i16..3, 0..4),
        prop::collection::vec(
            prop_oneof![
                Just(None),
                short_bytes().prop_map(Some),
                Just(Some(vec![0, 0, 0, 1])),
                Just(Some(vec![0; 8]))
            ],
            0..4,
        ),
        prop::collection::vec(-1i16..3, 0..3),
        lie.clone(),
    )
        .prop_map(|(portal, statement, formats, params, results, lie)| {
            let mut body = cstr(&portal);
            body.extend(cstr(&statement));
            body.extend((formats.len() as i16).to_be_bytes());
            formats.iter().for_each(|f| body.extend(f.to_be_bytes()));
            // Sometimes announce more parameters than follow.
            body.extend((params.len() as i16 + i16::from(lie)).to_be_bytes());
            for param in &params {
                match param {
                    None => body.extend((-1i32).to_be_bytes()),
                    Some(value) => {
                        body.extend((value.len() as i32).to_be_bytes());
                        body.extend(value);
                    }
                }
            }
            body.extend((results.len() as i16).to_be_bytes());
            results.iter().for_each(|f| body.extend(f.to_be_bytes()));
            message(b'B', &body)
        });
    let well_formed = prop_oneof![
        3 => sql(statements).prop_map(|s| message(b'Q', &cstr(&s))),
        2 => (name.clone(), sql(statements), prop::collection::vec(any::<u32>(), 0..3), lie)
            .prop_map(|(n, s, types, lie)| {
                let mut body = cstr(&n);
                body.extend(cstr(&s));
                let count = if lie { -1 } else { types.len() as i16 };
                body.extend(count.to_be_bytes());
                types.iter().for_each(|t| body.extend(t.to_be_bytes()));
                message(b'P', &body)
            }),
        2 => bind,
        1 => (prop::sample::select(vec![b'S', b'P', b'x']), name.clone())
            .prop_map(|(kind, n)| message(b'D', &[vec![kind], cstr(&n)].concat())),
        1 => (name.clone(), any::<i32>()).prop_map(|(n, rows)| {
            message(b'E', &[cstr(&n), rows.to_be_bytes().to_vec()].concat())
        }),
        1 => (prop::sample::select(vec![b'S', b'P', b'x']), name)
            .prop_map(|(kind, n)| message(b'C', &[vec![kind], cstr(&n)].concat())),
        2 => Just(message(b'S', &[])),
        1 => Just(message(b'H', &[])),
        1 => short_bytes().prop_map(|d| message(b'd', &d)),
        1 => Just(message(b'c', &[])),
        1 => prop::collection::vec(1u8.., 0..12).prop_map(|m| message(b'f', &cstr(&m))),
        1 => short_bytes().prop_map(|p| message(b'p', &p)),
        1 => Just(message(b'X', &[])),
    ];
    if !garbled {
        return well_formed.boxed();
    }
    prop_oneof![
        9 => well_formed,
        // A type byte the protocol does not have, or one it has with a body it does not expect.
        1 => (any::<u8>(), short_bytes()).prop_map(|(tag, body)| message(tag, &body)),
    ]
    .boxed()
}

/// A frontend message, or bytes that are not one.
fn garbled_message(statements: &'static [&'static str]) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        6 => framed_message(statements, true),
        // A declared length that disagrees with the body: negative, below 4, huge, or off.
        1 => (framed_message(statements, true), prop_oneof![
            Just(i32::MIN),
            Just(-1),
            Just(0),
            Just(3),
            Just(i32::MAX),
            Just(1 << 28),
            any::<i32>()
        ])
            .prop_map(|(mut m, len)| {
                m[1..5].copy_from_slice(&len.to_be_bytes());
                m
            }),
        // Cut short.
        1 => (framed_message(statements, true), any::<prop::sample::Index>()).prop_map(|(m, cut)| {
            let at = cut.index(m.len());
            m[..at].to_vec()
        }),
        1 => prop::collection::vec(any::<u8>(), 1..24),
    ]
    .boxed()
}

fn startup() -> impl Strategy<Value = Vec<u8>> {
    let param = (
        prop::sample::select(vec![
            "user",
            "database",
            "application_name",
            "options",
            "client_encoding",
            "DateStyle",
            "replication",
            "",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop_oneof![
            3 => Just(b"fuzz".to_vec()),
            1 => Just(b"nobody".to_vec()),
            1 => short_bytes().prop_map(|b| b.into_iter().filter(|&c| c != 0).collect()),
        ],
    );
    let params = prop::collection::vec(param, 0..4);
    prop_oneof![
        6 => Just(startup_packet(0x0003_0000, &[(b"user".to_vec(), b"fuzz".to_vec())])),
        2 => params.clone().prop_map(|p| startup_packet(0x0003_0000, &p)),
        1 => (prop_oneof![
            Just(0x0002_0000),
            Just(0x0003_0001),
            Just(0x0003_0002),
            Just(0x0004_0000),
            Just(80_877_102),
            Just(80_877_103),
            Just(80_877_104),
            any::<i32>()
        ], params)
            .prop_map(|(version, p)| startup_packet(version, &p)),
        1 => (any::<i32>(), short_bytes()).prop_map(|(len, rest)| {
            let mut out = len.to_be_bytes().to_vec();
            out.extend(rest);
            out
        }),
        1 => prop::collection::vec(any::<u8>(), 0..24),
    ]
}

/// A connection's input: a startup, then up to eight messages built around `statements`.
/// With `garbled`, the messages may contradict themselves, have wrong lengths, be cut short
/// anywhere or be random bytes; without, each is well formed, and only the last may be cut
/// short (the client's input ends inside it).
pub fn session(statements: &'static [&'static str], garbled: bool) -> BoxedStrategy<Vec<Vec<u8>>> {
    let messages = if garbled {
        prop::collection::vec(garbled_message(statements), 0..8).boxed()
    } else {
        (
            prop::collection::vec(framed_message(statements, false), 0..8),
            prop::option::weighted(0.2, any::<prop::sample::Index>()),
        )
            .prop_map(|(mut messages, cut)| {
                if let (Some(last), Some(cut)) = (messages.last_mut(), cut) {
                    let at = cut.index(last.len());
                    last.truncate(at);
                }
                messages
            })
            .boxed()
    };
    (startup(), messages)
        .prop_map(|(s, messages)| {
            let mut parts = vec![s];
            parts.extend(messages);
            parts
        })
        .boxed()
}

/// Sends `parts` on a new connection to `addr`, ends the client's input, and returns all the
/// server sent until it closed the connection. Fails if the server keeps the connection open
/// for `hang` after the client's end of input (a leak, and a test that would otherwise wait
/// forever without saying why).
pub fn exchange(addr: SocketAddr, parts: &[Vec<u8>], hang: Duration) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    for part in parts {
        // The server may close the connection at any message; what it does then is the test.
        if stream.write_all(part).is_err() {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    stream
        .set_read_timeout(Some(hang))
        .map_err(|e| format!("set a read timeout: {e}"))?;
    let mut received = Vec::new();
    match stream.read_to_end(&mut received) {
        Ok(_) => Ok(received),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(format!(
                "the server kept the connection open for {hang:?} after the client's end of input"
            ))
        }
        // A reset instead of an orderly close is still a close.
        Err(_) => Ok(received),
    }
}

/// The SQLSTATEs of the ErrorResponses among the backend messages in `bytes`; an error if the
/// messages are not well framed (the one-byte answer to an SSL or GSS request is skipped).
pub fn error_codes(mut bytes: &[u8]) -> Result<Vec<String>, String> {
    if let [b'N' | b'S' | b'G', rest @ ..] = bytes {
        if rest.first().is_none_or(|b| b.is_ascii_uppercase()) {
            bytes = rest;
        }
    }
    let mut codes = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 5 {
            return Err(format!("a truncated backend message: {bytes:?}"));
        }
        let tag = bytes[0];
        let len = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let end = usize::try_from(len).ok().filter(|&l| l >= 4).map(|l| 1 + l);
        let Some(end) = end.filter(|&end| end <= bytes.len()) else {
            return Err(format!(
                "backend message {} with length {len} in {} bytes",
                tag as char,
                bytes.len()
            ));
        };
        if tag == b'E' {
            let code = bytes[5..end]
                .split(|&b| b == 0)
                .find(|field| field.first() == Some(&b'C'))
                .map(|field| String::from_utf8_lossy(&field[1..]).into_owned());
            codes.push(code.unwrap_or_default());
        }
        bytes = &bytes[end..];
    }
    Ok(codes)
}
