//! A tiny SMTP server on 127.0.0.1 for the email notifications: plain SMTP (no TLS),
//! `AUTH PLAIN`/`AUTH LOGIN`, one or more messages a connection; it keeps what it got.
//! `refuse_auth` answers 535 to every login, as a server does for a wrong password.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

#[derive(Debug, Clone, Default)]
pub struct Mail {
    /// `user\0password` of the login, if any.
    pub login: Option<(String, String)>,
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent (headers and body), dot-unstuffed.
    pub data: String,
}

pub struct SmtpMock {
    pub addr: SocketAddr,
    pub mails: Arc<Mutex<Vec<Mail>>>,
    /// Every login tried, sent or not.
    pub logins: Arc<Mutex<Vec<(String, String)>>>,
}

impl SmtpMock {
    pub fn start(refuse_auth: bool) -> SmtpMock {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("addr");
        let mails = Arc::new(Mutex::new(Vec::new()));
        let logins = Arc::new(Mutex::new(Vec::new()));
        let (kept, tried) = (mails.clone(), logins.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (kept, tried) = (kept.clone(), tried.clone());
                std::thread::spawn(move || {
                    let _ = session(stream, &kept, &tried, refuse_auth);
                });
            }
        });
        SmtpMock {
            addr,
            mails,
            logins,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().expect("mails").clone()
    }
}

fn decode(b64: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn session(
    stream: TcpStream,
    kept: &Mutex<Vec<Mail>>,
    tried: &Mutex<Vec<(String, String)>>,
    refuse_auth: bool,
) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut lines = BufReader::new(stream);
    let mut say = |text: &str| -> std::io::Result<()> {
        out.write_all(text.as_bytes())?;
        out.write_all(b"\r\n")?;
        out.flush()
    };
    say("220 mock.smtp ESMTP ready")?;
    let mut mail = Mail::default();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            say("250-mock.smtp")?;
            say("250-AUTH PLAIN LOGIN")?;
            say("250 8BITMIME")?;
        } else if upper.starts_with("AUTH PLAIN") {
            let initial = cmd[10..].trim().to_string();
            let creds = if initial.is_empty() {
                say("334 ")?;
                line.clear();
                lines.read_line(&mut line)?;
                decode(&line)
            } else {
                decode(&initial)
            };
            let parts: Vec<&str> = creds.split('\0').collect();
            if parts.len() == 3 {
                mail.login = Some((parts[1].to_string(), parts[2].to_string()));
                tried.lock().expect("logins").extend(mail.login.clone());
            }
            say(if refuse_auth {
                "535 5.7.8 Authentication credentials invalid"
            } else {
                "235 2.7.0 Authentication successful"
            })?;
        } else if upper.starts_with("AUTH LOGIN") {
            say("334 VXNlcm5hbWU6")?;
            line.clear();
            lines.read_line(&mut line)?;
            let user = decode(&line);
            say("334 UGFzc3dvcmQ6")?;
            line.clear();
            lines.read_line(&mut line)?;
            mail.login = Some((user, decode(&line)));
            tried.lock().expect("logins").extend(mail.login.clone());
            say(if refuse_auth {
                "535 5.7.8 Authentication credentials invalid"
            } else {
                "235 2.7.0 Authentication successful"
            })?;
        } else if upper.starts_with("MAIL FROM:") {
            mail.from = cmd[10..]
                .trim()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or("")
                .to_string();
            say("250 2.1.0 Ok")?;
        } else if upper.starts_with("RCPT TO:") {
            mail.to.push(
                cmd[8..]
                    .trim()
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap_or("")
                    .to_string(),
            );
            say("250 2.1.5 Ok")?;
        } else if upper == "DATA" {
            say("354 End data with <CR><LF>.<CR><LF>")?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            mail.data = data;
            kept.lock().expect("mails").push(mail.clone());
            let login = mail.login.clone();
            mail = Mail {
                login,
                ..Mail::default()
            };
            say("250 2.0.0 Ok: queued")?;
        } else if upper == "RSET" {
            let login = mail.login.clone();
            mail = Mail {
                login,
                ..Mail::default()
            };
            say("250 2.0.0 Ok")?;
        } else if upper == "NOOP" {
            say("250 2.0.0 Ok")?;
        } else if upper == "QUIT" {
            say("221 2.0.0 Bye")?;
            return Ok(());
        } else {
            say("502 5.5.2 Command not recognized")?;
        }
    }
}
