//! EC2's answers must be XML before the SDK reads them. The SDK's parser is lenient:
//! a DescribeSnapshots answer cut short, or holding a character XML forbids (U+FFFE
//! in a tag a server let in), reads as snapshots with empty fields, and ebsnap would
//! then fail on an empty snapshot id far from the cause. boto3 refuses such an
//! answer; so does this, saying what is wrong with it.

use aws_sdk_ec2::config::interceptors::AfterDeserializationInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ec2::error::BoxError;
use quick_xml::events::Event;

/// The interceptor, on the EC2 client.
#[derive(Debug)]
pub(super) struct XmlCheck;

/// An answer that is not one well-formed XML document.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(super) struct NotXml {
    pub status: u16,
    pub message: String,
}

impl Intercept for XmlCheck {
    fn name(&self) -> &'static str {
        "ebsnap::XmlCheck"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _config: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response();
        let Some(body) = response.body().bytes() else {
            return Ok(());
        };
        well_formed(body).map_err(|message| {
            let status = response.status().as_u16();
            BoxError::from(NotXml { status, message })
        })
    }
}

/// Whether `body` is one well-formed XML document of allowed characters; if not, why.
pub(super) fn well_formed(body: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("not UTF-8: {e}"))?;
    if let Some((at, c)) = text.char_indices().find(|&(_, c)| !xml_char(c)) {
        let code = c as u32;
        return Err(format!(
            "character U+{code:04X} (byte {at}) is not allowed in XML"
        ));
    }
    let mut reader = quick_xml::Reader::from_str(text);
    let (mut depth, mut roots) = (0usize, 0usize);
    loop {
        match reader.read_event() {
            Err(e) => return Err(format!("at byte {}: {e}", reader.error_position())),
            Ok(Event::Start(_)) => {
                roots += usize::from(depth == 0);
                depth += 1;
            }
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::Empty(_)) => roots += usize::from(depth == 0),
            Ok(Event::Eof) => break,
            Ok(_) => {}
        }
    }
    match (depth, roots) {
        (0, 1) => Ok(()),
        (0, 0) => Err("no element in it".into()),
        (0, _) => Err("more than one root element".into()),
        _ => Err(format!("cut short: {depth} elements are not closed")),
    }
}

/// XML 1.0's `Char`.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

#[cfg(test)]
mod tests {
    use super::well_formed;

    #[test]
    fn only_whole_documents_of_xml_characters_pass() {
        assert!(well_formed(b"<?xml version=\"1.0\"?><a><b>x</b><c/></a>").is_ok());
        for bad in [
            &b"<a><b>x</b>"[..],
            b"",
            b"<a/><b/>",
            "<a>\u{fffe}</a>".as_bytes(),
            b"<a>\x01</a>",
            b"<a></b>",
            b"\xff",
        ] {
            assert!(
                well_formed(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
