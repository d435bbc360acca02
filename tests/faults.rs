//! Faults through the real binary (issue 8): slow and stopped targets, a server killed with
//! SIGKILL and restarted, a client restarted, and a peer silent for longer than every timeout.
//! After each, state must be freed and new connections must work.

mod harness;
mod hostile_common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use harness::*;
use hostile_common::*;

/// A half-closed upload to a target that stops reading for longer than `linger` (5 s) and
/// then reads on: every byte must arrive. The conversation is not idle (the server holds
/// the data and answers window probes); only the target is slow.
#[test]
fn slow_target_after_half_close_gets_the_whole_tail() {
    const LEN: usize = 8 << 20;
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let target = scripted_server(move |mut c: TcpStream| {
        let mut first = vec![0u8; 1 << 20];
        let r = c.read_exact(&mut first);
        // Stop reading for longer than linger: the tunnel's buffers fill up and the window
        // closes; nothing moves on the wire but window probes.
        thread::sleep(Duration::from_secs(8));
        let rest = r.map_err(|e| e.to_string()).and_then(|_| {
            let mut all = first.clone();
            c.read_to_end(&mut all)
                .map_err(|e| format!("after {} bytes: {e}", all.len()))?;
            Ok(all)
        });
        let _ = tx.lock().unwrap().send(rest);
    });
    let t = tunnel_to(target, Impair::default(), Impair::default(), 11);
    let mut c = connect(t.listen);
    let start = Instant::now();
    send_stream(&mut c, 77, LEN).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("target done");
    let got = got.unwrap_or_else(|e| panic!("target read failed {e} after {:?}", start.elapsed()));
    assert_eq!(got.len(), LEN, "tail lost");
    assert_eq!(expect_stream(&mut &got[..], 77, LEN), Ok(LEN));
}

/// Large half-closed uploads, back to back: the client queues most of each in KCP before
/// the application's EOF, so the half-closed conversation drains for seconds; every byte must
/// arrive (a linger timeout while data is still moving would cut the tail).
#[test]
fn large_half_closed_uploads_arrive_whole() {
    const LEN: usize = 32 << 20;
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let target = scripted_server(move |mut c: TcpStream| {
        let _ = tx.lock().unwrap().send(expect_stream(&mut c, 5, LEN));
    });
    let t = tunnel_to(target, Impair::default(), Impair::default(), 12);
    for i in 0..3 {
        let start = Instant::now();
        let mut c = connect(t.listen);
        send_stream(&mut c, 5, LEN).unwrap();
        let sent_in = start.elapsed();
        c.shutdown(Shutdown::Write).unwrap();
        let r = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("target done");
        assert_eq!(
            r,
            Ok(LEN),
            "upload {i}: written in {sent_in:?}, ended after {:?}",
            start.elapsed()
        );
    }
}
