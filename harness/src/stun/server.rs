//! STUN server answering Binding requests on up to four local addresses
//! (two IPs × two ports), as RFC 5780 §4.1 needs for NAT behaviour
//! discovery, and speaking enough RFC 3489 for classic clients.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::machine::Machine;
use crate::stun::codec::{attr_type, Attribute, Class, Message, Method};
use crate::stun::{Credentials, Event, StunError, Transmit};

/// RFC 8489 §14.14 caps SOFTWARE at 763 bytes.
const MAX_SOFTWARE: usize = 763;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Primary IP and port; requests without CHANGE-REQUEST are answered
    /// from whatever local address they arrived on.
    pub primary: SocketAddr,
    /// Second IP (same family). Without it "change IP" is refused with 420
    /// and no OTHER-ADDRESS is advertised.
    pub alternate_ip: Option<IpAddr>,
    /// Second port. Without it "change port" is refused with 420.
    pub alternate_port: Option<u16>,
    /// Short-term credentials; when set, every request must be
    /// authenticated (RFC 8489 §9.1.3).
    pub credentials: Option<Credentials>,
    pub software: Option<String>,
}

impl ServerConfig {
    /// A plain RFC 8489 server on one address: enough for Binding, not
    /// for RFC 5780 discovery.
    pub fn new(primary: SocketAddr) -> Self {
        Self {
            primary,
            alternate_ip: None,
            alternate_port: None,
            credentials: None,
            software: None,
        }
    }

    /// An RFC 5780 server: `primary`, plus the IP and port of `other`
    /// (what OTHER-ADDRESS advertises), so four local addresses in all.
    pub fn rfc5780(primary: SocketAddr, other: SocketAddr) -> Self {
        Self {
            alternate_ip: Some(other.ip()),
            alternate_port: Some(other.port()),
            ..Self::new(primary)
        }
    }
}

/// Counters for operators: whether the server is reached at all, and why
/// traffic is dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub requests: u64,
    pub indications: u64,
    pub success_responses: u64,
    pub error_responses: u64,
    /// Responses arriving at a server: not ours to answer.
    pub ignored: u64,
    pub malformed: u64,
    /// Keyed by [`StunError::kind`].
    pub malformed_by_reason: BTreeMap<&'static str, u64>,
}

impl ServerStats {
    pub fn responses_sent(&self) -> u64 {
        self.success_responses + self.error_responses
    }
}

/// Stateless (per RFC 8489, Binding needs no server state) answerer; it
/// still has the sans-IO `poll_*` surface so it can be driven like the
/// other machines.
#[derive(Debug)]
pub struct StunServer {
    config: ServerConfig,
    stats: ServerStats,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl StunServer {
    pub fn new(config: ServerConfig) -> Result<Self, StunError> {
        if let Some(alt) = config.alternate_ip {
            if alt.is_ipv4() != config.primary.is_ipv4() || alt == config.primary.ip() {
                return Err(StunError::Config(format!(
                    "alternate IP {alt} must differ from primary {} and be of the same family",
                    config.primary.ip()
                )));
            }
        }
        if config.alternate_port == Some(config.primary.port()) {
            return Err(StunError::Config(format!(
                "alternate port {} equals the primary port; pick another",
                config.primary.port()
            )));
        }
        if config
            .software
            .as_ref()
            .is_some_and(|s| s.len() > MAX_SOFTWARE)
        {
            return Err(StunError::Config(format!(
                "SOFTWARE is limited to {MAX_SOFTWARE} bytes; shorten it"
            )));
        }
        Ok(Self {
            config,
            stats: ServerStats::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// Every local address the I/O layer must bind (1, 2 or 4).
    pub fn local_addresses(&self) -> Vec<SocketAddr> {
        let p = self.config.primary;
        let ips = [Some(p.ip()), self.config.alternate_ip];
        let ports = [Some(p.port()), self.config.alternate_port];
        ips.iter()
            .flatten()
            .flat_map(|ip| {
                ports
                    .iter()
                    .flatten()
                    .map(move |port| SocketAddr::new(*ip, *port))
            })
            .collect()
    }

    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    fn other_ip(&self, ip: IpAddr) -> Option<IpAddr> {
        let alt = self.config.alternate_ip?;
        Some(if ip == alt {
            self.config.primary.ip()
        } else {
            alt
        })
    }

    fn other_port(&self, port: u16) -> Option<u16> {
        let alt = self.config.alternate_port?;
        Some(if port == alt {
            self.config.primary.port()
        } else {
            alt
        })
    }

    /// Builds and queues the success response, or says which error to send.
    fn answer(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        msg: &Message,
    ) -> Result<(), (u16, &'static str, Vec<u16>)> {
        if msg.method != Method::BINDING {
            return Err((400, "Bad Request: this server only answers Binding", vec![]));
        }
        let key = match &self.config.credentials {
            None => None,
            Some(creds) => {
                let Some(username) = msg.username() else {
                    return Err((
                        400,
                        "Bad Request: USERNAME and MESSAGE-INTEGRITY required",
                        vec![],
                    ));
                };
                if !msg.has_integrity() {
                    return Err((
                        400,
                        "Bad Request: USERNAME and MESSAGE-INTEGRITY required",
                        vec![],
                    ));
                }
                if username != creds.username {
                    return Err((401, "Unauthenticated: unknown USERNAME", vec![]));
                }
                if msg.verify_integrity(creds.password.as_bytes()).is_err() {
                    return Err((401, "Unauthenticated: MESSAGE-INTEGRITY mismatch", vec![]));
                }
                Some(creds.password.clone())
            }
        };
        let unknown = msg.unknown_comprehension_required();
        if !unknown.is_empty() {
            return Err((420, "Unknown Attribute", unknown));
        }
        let (change_ip, change_port) = msg.change_request().unwrap_or((false, false));
        // RFC 5780 §6.1: a server that cannot honour CHANGE-REQUEST for
        // lack of an alternate address answers 420, so the client knows
        // the silence of a filtering test would be meaningless.
        let cannot_change = || {
            (
                420,
                "Unknown Attribute: no alternate address for CHANGE-REQUEST",
                vec![attr_type::CHANGE_REQUEST],
            )
        };
        let source_ip = if change_ip {
            self.other_ip(local.ip()).ok_or_else(cannot_change)?
        } else {
            local.ip()
        };
        let source_port = if change_port {
            self.other_port(local.port()).ok_or_else(cannot_change)?
        } else {
            local.port()
        };
        let source = SocketAddr::new(source_ip, source_port);
        let destination = match msg.response_port() {
            Some(port) => SocketAddr::new(from.ip(), port),
            None => from,
        };
        let other = self
            .other_ip(local.ip())
            .zip(self.other_port(local.port()))
            .map(|(ip, port)| SocketAddr::new(ip, port));
        let classic = msg.is_classic();
        let mut resp = msg.reply(Class::SuccessResponse);
        if classic {
            resp.attributes.push(Attribute::MappedAddress(from));
            resp.attributes.push(Attribute::SourceAddress(source));
            if let Some(other) = other {
                resp.attributes.push(Attribute::ChangedAddress(other));
            }
        } else {
            resp.attributes.push(Attribute::XorMappedAddress(from));
            resp.attributes.push(Attribute::ResponseOrigin(source));
            if let Some(other) = other {
                resp.attributes.push(Attribute::OtherAddress(other));
            }
            if let Some(sw) = &self.config.software {
                resp.attributes.push(Attribute::Software(sw.clone()));
            }
        }
        let payload = resp
            .encode(key.as_deref().map(str::as_bytes), !classic)
            .map_err(|_| (500, "Server Error: response too large", vec![]))?;
        self.stats.success_responses += 1;
        self.transmits.push_back(Transmit {
            source,
            destination,
            payload,
        });
        self.events.push_back(Event::Answered {
            local,
            from,
            source,
            destination,
            transaction_id: msg.transaction_id,
            error_code: None,
            classic,
        });
        Ok(())
    }

    fn send_error(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        msg: &Message,
        code: u16,
        reason: &str,
        unknown: Vec<u16>,
    ) {
        let classic = msg.is_classic();
        let mut resp = msg.reply(Class::ErrorResponse).with(Attribute::ErrorCode {
            code,
            reason: reason.to_string(),
        });
        if !unknown.is_empty() {
            resp.attributes.push(Attribute::UnknownAttributes(unknown));
        }
        if let (Some(sw), false) = (&self.config.software, classic) {
            resp.attributes.push(Attribute::Software(sw.clone()));
        }
        // Small and bounded by construction (SOFTWARE is capped in `new`).
        let Ok(payload) = resp.encode(None, !classic) else {
            return;
        };
        self.stats.error_responses += 1;
        self.transmits.push_back(Transmit {
            source: local,
            destination: from,
            payload,
        });
        self.events.push_back(Event::Answered {
            local,
            from,
            source: local,
            destination: from,
            transaction_id: msg.transaction_id,
            error_code: Some(code),
            classic,
        });
    }

    /// Counts a datagram that is not acceptable STUN, by reason, and reports it.
    fn malformed(&mut self, from: SocketAddr, reason: StunError) {
        self.stats.malformed += 1;
        let by_reason = self.stats.malformed_by_reason.entry(reason.kind());
        *by_reason.or_default() += 1;
        self.events.push_back(Event::Malformed { from, reason });
    }
}

impl Machine for StunServer {
    type Event = Event;

    fn handle_datagram(&mut self, local: SocketAddr, from: SocketAddr, bytes: &[u8], _: Instant) {
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(reason) => return self.malformed(from, reason),
        };
        match msg.class {
            Class::Request => {}
            Class::Indication => {
                self.stats.indications += 1;
                self.events.push_back(Event::Indication {
                    local,
                    from,
                    transaction_id: msg.transaction_id,
                });
                return;
            }
            Class::SuccessResponse | Class::ErrorResponse => {
                self.stats.ignored += 1;
                return;
            }
        }
        self.stats.requests += 1;
        if let Err((code, reason, unknown)) = self.answer(local, from, &msg) {
            self.send_error(local, from, &msg, code, reason, unknown);
        }
    }

    /// The server keeps no timers; present for a uniform driving loop.
    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn local_addresses(&self) -> Vec<SocketAddr> {
        self.local_addresses()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::codec::TransactionId;
    use crate::stun::testnet::{addr, rfc5780_server_config, ALT_IP, ALT_PORT, PRIMARY};

    const FROM: &str = "203.0.113.7:40000";

    fn request(attrs: Vec<Attribute>) -> Message {
        let mut m = Message::new(Class::Request, Method::BINDING, TransactionId([1; 12]));
        m.attributes = attrs;
        m
    }

    /// Feeds one datagram to the server, returns (transmit, decoded reply).
    fn exchange(server: &mut StunServer, local: &str, bytes: &[u8]) -> Option<(Transmit, Message)> {
        server.handle_datagram(addr(local), addr(FROM), bytes, Instant::now());
        let t = server.poll_transmit()?;
        let m = Message::decode(&t.payload).unwrap();
        Some((t, m))
    }

    fn server() -> StunServer {
        StunServer::new(ServerConfig {
            software: Some("harness".into()),
            ..rfc5780_server_config()
        })
        .unwrap()
    }

    #[test]
    fn server_answers_binding_with_mapped_origin_and_other_address() {
        let mut s = server();
        let bytes = request(vec![]).encode(None, true).unwrap();
        let (t, m) = exchange(&mut s, PRIMARY, &bytes).unwrap();
        assert_eq!(t.source, addr(PRIMARY));
        assert_eq!(t.destination, addr(FROM));
        assert_eq!(m.class, Class::SuccessResponse);
        assert_eq!(m.transaction_id, TransactionId([1; 12]));
        assert!(
            matches!(m.get(attr_type::XOR_MAPPED_ADDRESS), Some(Attribute::XorMappedAddress(a)) if *a == addr(FROM))
        );
        assert_eq!(m.response_origin(), Some(addr(PRIMARY)));
        assert_eq!(
            m.other_address(),
            Some(addr(&format!("{ALT_IP}:{ALT_PORT}")))
        );
        assert_eq!(m.software(), Some("harness"));
        assert!(m.has_fingerprint());
        assert_eq!(s.stats().requests, 1);
        assert_eq!(s.stats().responses_sent(), 1);
        assert!(matches!(
            s.poll_event(),
            Some(Event::Answered {
                error_code: None,
                classic: false,
                ..
            })
        ));
    }

    #[test]
    fn server_sends_from_the_alternate_address_that_change_request_asks_for() {
        let mut s = server();
        let cases = [
            (PRIMARY, true, true, format!("{ALT_IP}:{ALT_PORT}")),
            (PRIMARY, false, true, format!("198.51.100.1:{ALT_PORT}")),
            (PRIMARY, true, false, format!("{ALT_IP}:3478")),
            ("198.51.100.2:3479", true, true, PRIMARY.to_string()),
        ];
        for (local, change_ip, change_port, expected) in cases {
            let bytes = request(vec![Attribute::ChangeRequest {
                change_ip,
                change_port,
            }])
            .encode(None, true)
            .unwrap();
            let (t, m) = exchange(&mut s, local, &bytes).unwrap();
            assert_eq!(
                t.source,
                addr(&expected),
                "{local} {change_ip} {change_port}"
            );
            assert_eq!(m.response_origin(), Some(addr(&expected)));
        }
    }

    #[test]
    fn server_without_alternate_address_refuses_change_request_with_420() {
        let mut s = StunServer::new(ServerConfig::new(addr(PRIMARY))).unwrap();
        let bytes = request(vec![Attribute::ChangeRequest {
            change_ip: true,
            change_port: false,
        }])
        .encode(None, true)
        .unwrap();
        let (t, m) = exchange(&mut s, PRIMARY, &bytes).unwrap();
        assert_eq!(t.source, addr(PRIMARY));
        assert_eq!(m.class, Class::ErrorResponse);
        assert_eq!(m.error_code().map(|e| e.0), Some(420));
        assert_eq!(
            m.get(attr_type::UNKNOWN_ATTRIBUTES),
            Some(&Attribute::UnknownAttributes(vec![3]))
        );
        assert_eq!(m.other_address(), None);
    }

    #[test]
    fn server_sends_to_response_port_when_asked() {
        let mut s = server();
        let bytes = request(vec![Attribute::ResponsePort(41000)])
            .encode(None, true)
            .unwrap();
        let (t, _) = exchange(&mut s, PRIMARY, &bytes).unwrap();
        assert_eq!(t.destination, addr("203.0.113.7:41000"));
    }

    #[test]
    fn server_with_credentials_answers_401_to_bad_integrity_and_400_to_none() {
        let mut s = StunServer::new(ServerConfig {
            credentials: Some(Credentials::new("alice", "secret")),
            ..rfc5780_server_config()
        })
        .unwrap();
        let good = request(vec![Attribute::Username("alice".into())]);
        let (_, m) = exchange(
            &mut s,
            PRIMARY,
            &good.encode(Some(b"secret"), true).unwrap(),
        )
        .unwrap();
        assert_eq!(m.class, Class::SuccessResponse);
        m.verify_integrity(b"secret").unwrap();
        let (_, m) =
            exchange(&mut s, PRIMARY, &good.encode(Some(b"wrong"), true).unwrap()).unwrap();
        assert_eq!(m.error_code().map(|e| e.0), Some(401));
        let (_, m) = exchange(&mut s, PRIMARY, &good.encode(None, true).unwrap()).unwrap();
        assert_eq!(m.error_code().map(|e| e.0), Some(400));
        assert_eq!(s.stats().error_responses, 2);
    }

    #[test]
    fn server_answers_unknown_comprehension_required_attribute_with_420_listing_it() {
        let mut s = server();
        let bytes = request(vec![
            Attribute::Unknown {
                typ: 0x7777,
                value: vec![1],
            },
            Attribute::Unknown {
                typ: 0xC001,
                value: vec![],
            },
        ])
        .encode(None, true)
        .unwrap();
        let (_, m) = exchange(&mut s, PRIMARY, &bytes).unwrap();
        assert_eq!(m.error_code().map(|e| e.0), Some(420));
        assert_eq!(
            m.get(attr_type::UNKNOWN_ATTRIBUTES),
            Some(&Attribute::UnknownAttributes(vec![0x7777]))
        );
    }

    #[test]
    fn server_answers_classic_rfc3489_client_with_mapped_source_and_changed_address() {
        let mut s = server();
        let id = [9u8; 16];
        let bytes = Message::classic(Class::Request, Method::BINDING, id)
            .with(Attribute::ChangeRequest {
                change_ip: false,
                change_port: true,
            })
            .encode(None, false)
            .unwrap();
        let (t, m) = exchange(&mut s, PRIMARY, &bytes).unwrap();
        assert_eq!(&t.payload[4..20], &id, "classic 128-bit id echoed");
        assert!(m.is_classic());
        assert!(!m.has_fingerprint());
        assert_eq!(
            m.get(attr_type::MAPPED_ADDRESS),
            Some(&Attribute::MappedAddress(addr(FROM)))
        );
        assert_eq!(m.get(attr_type::XOR_MAPPED_ADDRESS), None);
        assert_eq!(
            m.get(attr_type::SOURCE_ADDRESS),
            Some(&Attribute::SourceAddress(addr(&format!(
                "198.51.100.1:{ALT_PORT}"
            ))))
        );
        assert_eq!(
            m.other_address(),
            Some(addr(&format!("{ALT_IP}:{ALT_PORT}")))
        );
    }

    #[test]
    fn server_counts_and_drops_malformed_datagrams_by_reason() {
        let mut s = server();
        let mut bad_fp = request(vec![]).encode(None, true).unwrap();
        bad_fp[25] ^= 0xff;
        let inputs: [&[u8]; 4] = [
            b"",
            b"INVITE sip:bob@example.com SIP/2.0\r\n",
            &[0u8; 21],
            &bad_fp,
        ];
        for bytes in inputs {
            assert!(exchange(&mut s, PRIMARY, bytes).is_none());
        }
        let st = s.stats();
        assert_eq!(st.malformed, 4);
        assert_eq!(st.requests, 0);
        assert_eq!(st.responses_sent(), 0);
        assert_eq!(st.malformed_by_reason.get("truncated"), Some(&1));
        assert_eq!(st.malformed_by_reason.get("not_stun"), Some(&1));
        assert_eq!(st.malformed_by_reason.get("length_mismatch"), Some(&1));
        assert_eq!(st.malformed_by_reason.get("fingerprint_mismatch"), Some(&1));
        assert!(matches!(
            s.poll_event(),
            Some(Event::Malformed {
                reason: StunError::Truncated { len: 0 },
                ..
            })
        ));
    }

    #[test]
    fn server_counts_indications_without_answering() {
        let mut s = server();
        let bytes = Message::new(Class::Indication, Method::BINDING, TransactionId([2; 12]))
            .encode(None, true)
            .unwrap();
        assert!(exchange(&mut s, PRIMARY, &bytes).is_none());
        assert_eq!(s.stats().indications, 1);
    }

    #[test]
    fn server_config_rejects_alternate_port_equal_to_primary() {
        let err = StunServer::new(ServerConfig {
            alternate_port: Some(3478),
            ..ServerConfig::new(addr(PRIMARY))
        })
        .unwrap_err();
        assert!(err.to_string().contains("alternate port"));
        assert_eq!(server().local_addresses().len(), 4);
    }
}
