//! The SVG status badge of a job, for READMEs.

use kubeci_engine::Phase;

use crate::ansi::escape;

/// An SVG status badge: `label | state`.
pub fn badge(label: &str, state: Option<Phase>) -> String {
    let text = state.map_or("no builds", Phase::as_str);
    let colour = match state {
        Some(Phase::Succeeded) => "#1a7f37",
        Some(Phase::Failed | Phase::Error) => "#cf222e",
        Some(Phase::Aborted) | None => "#59636e",
        Some(Phase::Queued | Phase::Pending | Phase::Running) => "#8a5c00",
    };
    let (left, right) = (
        label.chars().count() * 7 + 10,
        text.chars().count() * 7 + 10,
    );
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"20\" role=\"img\" aria-label=\"{l}: {t}\">\
<rect width=\"{left}\" height=\"20\" fill=\"#555\"/><rect x=\"{left}\" width=\"{right}\" height=\"20\" fill=\"{colour}\"/>\
<g fill=\"#fff\" font-family=\"Verdana,sans-serif\" font-size=\"11\"><text x=\"5\" y=\"14\">{l}</text><text x=\"{x}\" y=\"14\">{t}</text></g></svg>\n",
        w = left + right,
        l = escape(label),
        t = escape(text),
        x = left + 5,
    )
}
