//! What a `ua` component's keys make of its [`UaConfig`] beyond what the runner sets itself: the
//! SDP it offers and the transport it registers over. No IO.

use super::file::Component;
use crate::sip::sdp::Offer;
use crate::sip::UaConfig;

/// The offer a `ua` component's `codecs` and `video` describe; `None` for any other component.
pub fn offer(comp: &Component) -> Option<Offer> {
    match comp {
        Component::Ua { codecs, video, .. } => Some(Offer {
            codecs: codecs.clone(),
            video: *video,
        }),
        _ => None,
    }
}

/// Gives `cfg` what `comp` says beyond the runner's own settings (its SDP offer). The runner
/// calls it once per phone, after building the config.
pub fn configure(comp: &Component, cfg: &mut UaConfig) {
    if let Some(offer) = offer(comp) {
        cfg.offer = offer;
    }
    if let Component::Ua { transport, .. } = comp {
        cfg.transport = (*transport).into();
        // Its proxy serves TLS on the next port (5061).
        cfg.proxy = crate::sip::proxy::listen_address(cfg.proxy, cfg.transport);
    }
}
