//! The SVG status badge of a job, for READMEs.

use kubeci_engine::Phase;
use maud::html;

/// An SVG status badge: `label | state`.
pub fn badge(label: &str, state: Option<Phase>) -> String {
    let said = state.map_or("no builds", Phase::as_str);
    let colour = match state {
        Some(Phase::Succeeded) => "#1a7f37",
        Some(Phase::Failed | Phase::Error) => "#cf222e",
        Some(Phase::Aborted) | None => "#59636e",
        Some(Phase::Queued | Phase::Pending | Phase::Running) => "#8a5c00",
    };
    let (left, right) = (
        label.chars().count() * 7 + 10,
        said.chars().count() * 7 + 10,
    );
    // SVG is XML: every element is closed (`{}`), never left open as HTML's void ones are.
    let mut svg = html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(left + right) height="20" role="img"
            aria-label={ (label) ": " (said) } {
            rect width=(left) height="20" fill="#555" {}
            rect x=(left) width=(right) height="20" fill=(colour) {}
            g fill="#fff" font-family="Verdana,sans-serif" font-size="11" {
                text x="5" y="14" { (label) }
                text x=(left + 5) y="14" { (said) }
            }
        }
    }
    .into_string();
    svg.push('\n');
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_badge_is_well_formed_svg_with_its_label_escaped() {
        let svg = badge("a<b>&\"c", Some(Phase::Failed));
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(
            svg.contains("aria-label=\"a&lt;b&gt;&amp;&quot;c: failed\""),
            "{svg}"
        );
        assert!(svg.contains(">a&lt;b&gt;&amp;&quot;c</text>"), "{svg}");
        assert!(svg.contains("fill=\"#cf222e\"></rect>"), "closed: {svg}");
        assert_eq!(svg.matches("<rect").count(), svg.matches("</rect>").count());
    }
}
