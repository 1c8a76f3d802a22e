//! The SDP bodies a phone writes (RFC 4566, offer/answer per RFC 3264), as text; no IO.
//!
//! A phone's offer grows with what it can do: every audio codec gets an `a=rtpmap` (and often an
//! `a=fmtp`) line, and video adds a second media section with several H.264 profiles, VP8 and
//! their RTCP feedback lines. A video phone's INVITE is then larger than an Ethernet MTU, which is
//! how a router that drops IP fragments loses it (RFC 3261 §18.1.1 asks for TCP above 1300 bytes;
//! phones on UDP send it anyway). The harness's phone streams PCMU whatever it offers, so PCMU is
//! always among the offered codecs.

use std::fmt::Write as _;
use std::net::IpAddr;

/// One audio codec a phone can offer: its name as a user writes it, its static payload type (or
/// `None`: dynamic, numbered from 96 in offer order), `a=rtpmap` encoding and `a=fmtp`.
struct Codec {
    name: &'static str,
    static_pt: Option<u8>,
    rtpmap: &'static str,
    fmtp: Option<&'static str>,
}

/// The audio codecs desk and soft phones commonly offer (RFC 3551's static types, then the
/// dynamic ones with the parameters phones send).
const AUDIO: &[Codec] = &[
    Codec {
        name: "PCMU",
        static_pt: Some(0),
        rtpmap: "PCMU/8000",
        fmtp: None,
    },
    Codec {
        name: "PCMA",
        static_pt: Some(8),
        rtpmap: "PCMA/8000",
        fmtp: None,
    },
    Codec {
        name: "G722",
        static_pt: Some(9),
        rtpmap: "G722/8000",
        fmtp: None,
    },
    Codec {
        name: "G729",
        static_pt: Some(18),
        rtpmap: "G729/8000",
        fmtp: Some("annexb=no"),
    },
    Codec {
        name: "GSM",
        static_pt: Some(3),
        rtpmap: "GSM/8000",
        fmtp: None,
    },
    Codec {
        name: "opus",
        static_pt: None,
        rtpmap: "opus/48000/2",
        fmtp: Some("minptime=10;useinbandfec=1"),
    },
    Codec {
        name: "iLBC",
        static_pt: None,
        rtpmap: "iLBC/8000",
        fmtp: Some("mode=30"),
    },
    Codec {
        name: "speex",
        static_pt: None,
        rtpmap: "speex/16000",
        fmtp: Some("vbr=on"),
    },
    Codec {
        name: "AMR-WB",
        static_pt: None,
        rtpmap: "AMR-WB/16000",
        fmtp: Some("octet-align=1"),
    },
    Codec {
        name: "G726-32",
        static_pt: None,
        rtpmap: "G726-32/8000",
        fmtp: None,
    },
    Codec {
        name: "telephone-event",
        static_pt: None,
        rtpmap: "telephone-event/8000",
        fmtp: Some("0-16"),
    },
];

/// The video formats a video phone offers, each with the RTCP feedback it asks for.
const VIDEO: &[(&str, Option<&str>)] = &[
    (
        "H264/90000",
        Some("profile-level-id=42e01f;packetization-mode=1;max-br=2048;max-mbps=245760"),
    ),
    (
        "H264/90000",
        Some("profile-level-id=42e01f;packetization-mode=0;max-br=2048;max-mbps=245760"),
    ),
    (
        "H264/90000",
        Some("profile-level-id=640c1f;packetization-mode=1;level-asymmetry-allowed=1"),
    ),
    ("VP8/90000", Some("max-fr=30;max-fs=3600")),
];

/// The RTCP feedback lines a video phone asks for per format (RFC 4585, RFC 5104).
const VIDEO_FEEDBACK: &[&str] = &["nack", "nack pli", "ccm fir", "goog-remb"];

/// The names a scenario may give, for error messages.
pub fn codec_names() -> Vec<&'static str> {
    AUDIO.iter().map(|c| c.name).collect()
}

/// What a phone offers: audio codecs in preference order, and whether it offers video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Codec names from [`codec_names`], matched case-insensitively.
    pub codecs: Vec<String>,
    /// A second media section (`m=video`, on the audio port + 2) with H.264 and VP8. The harness
    /// sends no video: the offer is what matters on the wire.
    pub video: bool,
}

impl Default for Offer {
    /// PCMU alone, no video: the smallest offer, what the harness's phone always sent.
    fn default() -> Self {
        Offer {
            codecs: vec!["PCMU".into()],
            video: false,
        }
    }
}

impl Offer {
    /// Refuses an unknown codec, a repeated one, and an offer without PCMU (what the phone
    /// streams), naming the valid codecs.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = Vec::new();
        for name in &self.codecs {
            let Some(c) = AUDIO.iter().find(|c| c.name.eq_ignore_ascii_case(name)) else {
                return Err(format!(
                    "unknown codec `{name}`; valid: {}",
                    codec_names().join(", ")
                ));
            };
            if seen.contains(&c.name) {
                return Err(format!("codec `{}` is offered twice", c.name));
            }
            seen.push(c.name);
        }
        if !seen.contains(&"PCMU") {
            return Err(
                "the codecs must include PCMU: the harness's phone streams PCMU (payload type 0)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The SDP offer for audio at `ip:port` (session version 1, id `session`).
    pub fn render(&self, session: u64, ip: IpAddr, port: u16) -> String {
        let mut sdp = header(session, ip);
        let mut next_dynamic = 96u8;
        let mut audio: Vec<(u8, &Codec)> = Vec::new();
        for name in &self.codecs {
            if let Some(c) = AUDIO.iter().find(|c| c.name.eq_ignore_ascii_case(name)) {
                let pt = c.static_pt.unwrap_or_else(|| {
                    next_dynamic += 1;
                    next_dynamic - 1
                });
                audio.push((pt, c));
            }
        }
        let pts: Vec<String> = audio.iter().map(|(pt, _)| pt.to_string()).collect();
        let _ = write!(sdp, "m=audio {port} RTP/AVP {}\r\n", pts.join(" "));
        for (pt, c) in &audio {
            let _ = write!(sdp, "a=rtpmap:{pt} {}\r\n", c.rtpmap);
            if let Some(f) = c.fmtp {
                let _ = write!(sdp, "a=fmtp:{pt} {f}\r\n");
            }
        }
        if self.video {
            let video: Vec<u8> = (0..VIDEO.len()).map(|i| next_dynamic + i as u8).collect();
            let pts: Vec<String> = video.iter().map(u8::to_string).collect();
            let _ = write!(
                sdp,
                "m=video {} RTP/AVP {}\r\nb=AS:2048\r\n",
                port.wrapping_add(2),
                pts.join(" ")
            );
            for (pt, (rtpmap, fmtp)) in video.iter().zip(VIDEO) {
                let _ = write!(sdp, "a=rtpmap:{pt} {rtpmap}\r\n");
                if let Some(f) = fmtp {
                    let _ = write!(sdp, "a=fmtp:{pt} {f}\r\n");
                }
                for fb in VIDEO_FEEDBACK {
                    let _ = write!(sdp, "a=rtcp-fb:{pt} {fb}\r\n");
                }
            }
            sdp.push_str("a=sendrecv\r\n");
        }
        sdp
    }
}

/// The SDP answer to `offer` for audio at `ip:port`: PCMU, and every other media section of the
/// offer rejected with port 0 in its place (RFC 3264 §6: an answer has as many `m=` lines as the
/// offer, in the same order).
pub fn answer(offer: &[u8], session: u64, ip: IpAddr, port: u16) -> String {
    let mut sdp = header(session, ip);
    sdp.push_str(&format!(
        "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ));
    let text = String::from_utf8_lossy(offer);
    let mut audio_answered = false;
    for m in text.lines().filter_map(|l| l.strip_prefix("m=")) {
        let mut fields = m.split_whitespace();
        let (Some(media), Some(_port), Some(proto), Some(fmt)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if media == "audio" && !audio_answered {
            audio_answered = true;
            continue;
        }
        let _ = write!(sdp, "m={media} 0 {proto} {fmt}\r\n");
    }
    sdp
}

/// `sdp` with `lines` (attribute values, without `a=`) at the end of its first audio section:
/// media-level attributes such as ICE's (RFC 8839 §5) belong to the stream they describe.
pub fn with_audio_attributes(sdp: String, lines: &[String]) -> String {
    if lines.is_empty() {
        return sdp;
    }
    let added: String = lines.iter().map(|l| format!("a={l}\r\n")).collect();
    let Some(audio) = sdp.find("m=audio ") else {
        return sdp + &added;
    };
    let end = sdp[audio..]
        .find("\r\nm=")
        .map_or(sdp.len(), |i| audio + i + 2);
    let mut out = sdp;
    out.insert_str(end, &added);
    out
}

fn header(session: u64, ip: IpAddr) -> String {
    let fam = if ip.is_ipv4() { "IP4" } else { "IP6" };
    format!("v=0\r\no=- {session} 1 IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 10));

    #[test]
    fn the_default_offer_is_the_one_line_pcmu_offer_phones_always_sent() {
        assert_eq!(
            Offer::default().render(7, IP, 4000),
            "v=0\r\no=- 7 1 IN IP4 192.168.1.10\r\ns=-\r\nc=IN IP4 192.168.1.10\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        );
    }

    #[test]
    fn a_video_phone_with_every_codec_offers_more_than_an_ethernet_mtu_holds() {
        let offer = Offer {
            codecs: codec_names().into_iter().map(String::from).collect(),
            video: true,
        };
        offer.check().unwrap();
        let sdp = offer.render(7, IP, 4000);
        assert!(
            sdp.contains("m=audio 4000 RTP/AVP 0 8 9 18 3 96 97 98 99 100 101\r\n"),
            "{sdp}"
        );
        assert!(
            sdp.contains("m=video 4002 RTP/AVP 102 103 104 105\r\n"),
            "{sdp}"
        );
        assert!(sdp.contains("a=fmtp:101 0-16\r\n"), "{sdp}");
        // With a phone's ≈ 500 bytes of headers, the INVITE exceeds 1472 (1500 − IP − UDP).
        assert!(sdp.len() > 1100, "{} bytes", sdp.len());
    }

    #[test]
    fn an_offer_without_pcmu_or_with_an_unknown_codec_is_refused() {
        let no_pcmu = Offer {
            codecs: vec!["PCMA".into()],
            video: false,
        };
        assert!(no_pcmu.check().unwrap_err().contains("PCMU"));
        let unknown = Offer {
            codecs: vec!["PCMU".into(), "G723".into()],
            video: false,
        };
        let e = unknown.check().unwrap_err();
        assert!(e.contains("`G723`") && e.contains("opus"), "{e}");
    }

    #[test]
    fn ice_attributes_go_to_the_audio_section_before_a_video_one() {
        let offer = Offer {
            codecs: vec!["PCMU".into()],
            video: true,
        }
        .render(1, IP, 4000);
        let lines = vec!["ice-ufrag:abcd".to_string()];
        let sdp = with_audio_attributes(offer, &lines);
        assert!(
            sdp.contains("a=rtpmap:0 PCMU/8000\r\na=ice-ufrag:abcd\r\nm=video"),
            "{sdp}"
        );
        let plain = with_audio_attributes(Offer::default().render(1, IP, 4000), &lines);
        assert!(plain.ends_with("a=ice-ufrag:abcd\r\n"), "{plain}");
    }

    #[test]
    fn the_answer_rejects_the_offered_video_in_its_place() {
        let offer = Offer {
            codecs: vec!["PCMU".into()],
            video: true,
        }
        .render(1, IP, 4000);
        let a = answer(offer.as_bytes(), 2, IP, 5000);
        assert!(
            a.ends_with(
                "m=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\nm=video 0 RTP/AVP 96\r\n"
            ),
            "{a}"
        );
        let plain = answer(b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n", 2, IP, 5000);
        assert!(plain.ends_with("a=rtpmap:0 PCMU/8000\r\n"), "{plain}");
    }
}
