//! QR codes drawn in the terminal, for pairing a phone by pointing its camera at the screen.
//!
//! Two modules per character cell (the upper and lower half blocks), so a pairing URL fits in
//! about 30 lines. Colours are inverted for the usual dark terminal background: light modules
//! are drawn as blocks, dark ones as spaces; phone scanners read both polarities.

use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};

/// `url` as a QR code in half-block characters, with its quiet zone, one line per two rows of
/// modules. Falls back to a note when the text is too long to encode (over ~2,300 bytes).
pub fn render_qr(url: &str) -> String {
    match QrCode::with_error_correction_level(url.as_bytes(), EcLevel::L) {
        Ok(code) => code
            .render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
        Err(e) => format!("(no QR code: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pairing_url_renders_as_half_blocks_of_even_width() {
        let qr = render_qr(
            "https://seasonal-deck-organisms-sf.trycloudflare.com/pair#c=3q2-7LmN0pQrStUvWxYz0123456789ab",
        );
        let lines: Vec<&str> = qr.lines().collect();
        assert!(
            lines.len() > 10 && lines.len() < 40,
            "{} lines",
            lines.len()
        );
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width));
        assert!(
            qr.chars()
                .all(|c| matches!(c, ' ' | '█' | '▀' | '▄' | '\n')),
            "{qr}"
        );
        // The quiet zone is light, which is drawn as full blocks here.
        assert!(lines[0].chars().all(|c| c == '█'));
    }

    #[test]
    fn different_urls_give_different_codes() {
        assert_ne!(
            render_qr("https://a.example/pair#c=1"),
            render_qr("https://a.example/pair#c=2")
        );
    }
}
