//! The PROXY header glue, driven as a socket would drive it: the bytes that have arrived are
//! offered from the first one not yet consumed.

use super::*;
use proptest::prelude::*;

/// Feeds `stream` arriving in pieces cut at `cuts`; returns the header and how many bytes the
/// reader consumed, or its error (EOF once everything has arrived and it still wants more).
fn drive(stream: &[u8], cuts: &[usize]) -> Result<(Header, usize), HeaderError> {
    let mut reader = HeaderReader::new();
    let mut arrived = 0;
    let mut consumed = 0;
    let mut cuts = cuts
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < stream.len())
        .collect::<Vec<_>>();
    cuts.sort_unstable();
    cuts.push(stream.len());
    let mut cuts = cuts.into_iter();
    loop {
        if consumed == arrived {
            match cuts.next() {
                Some(next) => arrived = next.max(arrived),
                None => return Err(reader.eof()),
            }
            if consumed == arrived {
                continue;
            }
        }
        match reader.offer(&stream[consumed..arrived])? {
            Step::Take(n) => {
                assert!(n > 0 && n <= arrived - consumed, "take {n}");
                consumed += n;
            }
            Step::Done(n, header) => {
                assert!(n > 0 && n <= arrived - consumed, "take {n}");
                return Ok((header, consumed + n));
            }
        }
    }
}

fn v2_local() -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x20, 0x00, 0, 0]);
    h
}

fn addr(s: &str) -> Option<Address> {
    Some(Address::Inet(s.parse().unwrap()))
}

#[test]
fn a_v1_header_gives_the_real_client_and_leaves_the_data() {
    let stream = b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 7\r\nhello";
    let (header, used) = drive(stream, &[]).unwrap();
    assert_eq!(used, stream.len() - 5);
    assert_eq!(header.source, addr("192.0.2.7:5000"));
    assert_eq!(header.destination, addr("127.0.0.1:7"));
}

#[test]
fn a_v2_header_gives_the_real_client_and_leaves_the_data() {
    let mut stream = encode(
        Version::V2,
        "[2001:db8::1]:4000".parse().unwrap(),
        "[::1]:7".parse().unwrap(),
    );
    let len = stream.len();
    stream.extend_from_slice(b"PROXY TCP4 data");
    let (header, used) = drive(&stream, &[3, 13, 17]).unwrap();
    assert_eq!((used, header.len), (len, len));
    assert_eq!(header.source, addr("[2001:db8::1]:4000"));
}

#[test]
fn local_and_unknown_speak_for_the_socket() {
    assert_eq!(drive(&v2_local(), &[]).unwrap().0.source, None);
    assert_eq!(drive(b"PROXY UNKNOWN\r\nx", &[]).unwrap().0.source, None);
}

#[test]
fn every_bad_header_is_refused_with_its_reason() {
    type Case = (Vec<u8>, fn(&HeaderError) -> bool);
    let cases: Vec<Case> = vec![
        (b"GET / HTTP/1.0\r\n\r\n".to_vec(), |e| {
            matches!(e, HeaderError::Missing(_))
        }),
        (b"PROXY TCP4 1.2.3.4".to_vec(), |e| {
            matches!(e, HeaderError::Truncated(18))
        }),
        ([&b"PROXY TCP4 "[..], &[b'1'; 120]].concat(), |e| {
            matches!(e, HeaderError::TooLong(107))
        }),
        (b"PROXY TCP4 ::1 ::1 1 2\r\n".to_vec(), |e| {
            matches!(e, HeaderError::Family(_))
        }),
        (b"PROXY TCP9 1.2.3.4 1.2.3.4 1 2\r\n".to_vec(), |e| {
            matches!(e, HeaderError::Family(_))
        }),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 x 2\r\n".to_vec(), |e| {
            matches!(e, HeaderError::Garbled(_))
        }),
        ([&V2_SIGNATURE[..], &[0x30, 0x11, 0, 12]].concat(), |e| {
            matches!(e, HeaderError::Version(3))
        }),
        (
            [&V2_SIGNATURE[..], &[0x21, 0x11, 0, 4, 1, 2, 3, 4]].concat(),
            |e| matches!(e, HeaderError::Family(_)),
        ),
        ([&V2_SIGNATURE[..], &[0x21, 0x12, 0, 12]].concat(), |e| {
            matches!(e, HeaderError::Truncated(16))
        }),
        (
            [&V2_SIGNATURE[..], &[0x21, 0x11, 0xff, 0xff]].concat(),
            |e| matches!(e, HeaderError::TooLong(_)),
        ),
        (
            [&V2_SIGNATURE[..], &[0x21, 0x12, 0, 12], &[0; 12]].concat(),
            |e| matches!(e, HeaderError::Family(_)),
        ),
        (V2_SIGNATURE[..7].to_vec(), |e| {
            matches!(e, HeaderError::Truncated(7))
        }),
        (b"\r\n\r\n\0\r\nQUIX\n".to_vec(), |e| {
            matches!(e, HeaderError::Missing(_))
        }),
    ];
    for (stream, expected) in cases {
        let error = drive(&stream, &[]).unwrap_err();
        assert!(
            expected(&error),
            "{:?}: {error:?}",
            stream.escape_ascii().to_string()
        );
        // The same verdict however the bytes arrive (a missing header's text shows only what
        // had arrived).
        let cuts: Vec<usize> = (1..stream.len()).collect();
        let piecewise = drive(&stream, &cuts).unwrap_err();
        assert!(expected(&piecewise), "byte by byte: {piecewise:?}");
    }
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

proptest! {
    /// A header sent by `encode`, followed by any data, arriving cut anywhere: the reader
    /// takes exactly the header and reads the client back (as IPv6 when the families differ).
    #[test]
    fn encoded_headers_read_back_at_every_split(
        v2 in any::<bool>(),
        source in socket_addr(),
        destination in socket_addr(),
        data in proptest::collection::vec(any::<u8>(), 0..64),
        cuts in proptest::collection::vec(0usize..200, 0..8),
    ) {
        let version = if v2 { Version::V2 } else { Version::V1 };
        let header = encode(version, source, destination);
        let stream = [&header[..], &data[..]].concat();
        let (read, used) = drive(&stream, &cuts).unwrap();
        prop_assert_eq!(used, header.len());
        let expected = match (source, destination) {
            (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => source,
            _ => to_v6(source),
        };
        prop_assert_eq!(read.source, Some(Address::Inet(expected)));
    }

    /// Any bytes at all: the reader never takes a byte past what it is offered, never more than
    /// the longest header, and ends in a header or an error.
    #[test]
    fn arbitrary_bytes_never_overrun(
        prefix in prop_oneof![Just(&V2_SIGNATURE[..]), Just(&b"PROXY "[..]), Just(&b""[..])],
        tail in proptest::collection::vec(any::<u8>(), 0..1200),
        cuts in proptest::collection::vec(0usize..1300, 0..8),
    ) {
        let stream = [prefix, &tail[..]].concat();
        if let Ok((header, used)) = drive(&stream, &cuts) {
            prop_assert!(used <= stream.len() && used <= V2_MAX_BYTES);
            prop_assert_eq!(header.len, used);
        }
    }
}
