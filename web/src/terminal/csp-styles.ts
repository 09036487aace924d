// The server's Content-Security-Policy lets the page use only the app's own style sheets
// (`style-src 'self'`, crates/maestro-server/src/http/web.rs), so the `<style>` elements that
// xterm.js writes at run time (cell size, theme colours, the scrollbar) are refused and the
// terminal renders without them. Constructed style sheets are not subject to `style-src`: each
// of those `<style>` elements is mirrored into one, kept in step as xterm.js rewrites it.

export function mirrorStyles(root: HTMLElement): () => void {
  const sheets = new Map<HTMLStyleElement, { sheet: CSSStyleSheet; text: string }>();
  const adopt = (add: CSSStyleSheet[], remove: Set<CSSStyleSheet>) => {
    document.adoptedStyleSheets = [...document.adoptedStyleSheets.filter((s) => !remove.has(s)), ...add];
  };
  const sync = () => {
    const added: CSSStyleSheet[] = [];
    const seen = new Set<HTMLStyleElement>();
    for (const el of root.querySelectorAll("style")) {
      seen.add(el);
      const text = el.textContent ?? "";
      let entry = sheets.get(el);
      if (!entry) {
        entry = { sheet: new CSSStyleSheet(), text: "" };
        sheets.set(el, entry);
        added.push(entry.sheet);
      }
      if (entry.text !== text) {
        entry.sheet.replaceSync(text);
        entry.text = text;
      }
    }
    const gone = new Set<CSSStyleSheet>();
    for (const [el, entry] of sheets) {
      if (!seen.has(el)) {
        gone.add(entry.sheet);
        sheets.delete(el);
      }
    }
    if (added.length || gone.size) adopt(added, gone);
  };
  const observer = new MutationObserver(sync);
  observer.observe(root, { subtree: true, childList: true, characterData: true });
  sync();
  return () => {
    observer.disconnect();
    adopt([], new Set([...sheets.values()].map((e) => e.sheet)));
    sheets.clear();
  };
}
