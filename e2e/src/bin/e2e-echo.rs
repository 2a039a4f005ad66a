//! A tiny HTTP server and client for end-to-end network tests.
//!
//!   e2e-echo serve <port>      answers every request with "echo from <hostname>"
//!   e2e-echo get <host:port>   prints the response body; exits 1 on failure
//!   e2e-echo connect <ip:port> [seconds]
//!                              opens a TCP connection and closes it; prints "connected", or
//!                              exits 1 with the error (a NetworkPolicy's refusal); with
//!                              seconds, tries again until then (a policy enforcer lets a
//!                              new pod in moments after it starts)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn serve(port: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(format!("0.0.0.0:{port}"))?;
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let body = format!("echo from {}", host.trim());
    for stream in listener.incoming() {
        let mut stream = stream?;
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf)?;
        let response = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes())?;
    }
    Ok(())
}

fn get(addr: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or(response))
}

fn connect(addr: &str, seconds: Option<&String>) -> std::io::Result<String> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let addr: std::net::SocketAddr = addr.parse().map_err(|e| invalid(format!("{addr}: {e}")))?;
    let seconds: u64 = seconds
        .map(|s| s.parse().map_err(|e| invalid(format!("{s}: {e}"))))
        .transpose()?
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        // A policy that drops rather than rejects shows as a timeout.
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(_) => return Ok("connected".into()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("serve"), Some(port)) => serve(port).map(|()| String::new()),
        (Some("get"), Some(addr)) => get(addr),
        (Some("connect"), Some(addr)) => connect(addr, args.get(3)),
        _ => {
            eprintln!(
                "usage: e2e-echo serve <port> | e2e-echo get <host:port> | e2e-echo connect <ip:port> [seconds]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("e2e-echo: {e}");
            ExitCode::FAILURE
        }
    }
}
