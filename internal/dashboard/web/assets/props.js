// skyjoin dashboard: the summary of a record's properties in the live feed.
// It is plain text (the feed sets it as textContent, never as HTML): the
// top-level entries as "key: value", a few of them, each value shortened.
// A separate file so that it can be tested on its own (dashboard_test.go).
"use strict";
((root) => {
  const MAX_ENTRIES = 4; // entries shown; then "+N more"
  const MAX_NAME = 24;
  const MAX_VALUE = 32;
  const MAX_TEXT = 140;

  const short = (s, n) => (s.length > n ? s.slice(0, n - 1) + "…" : s);
  const scalar = (v) => v === null || ["string", "number", "boolean"].includes(typeof v);

  function value(v) {
    if (v === null) return "null";
    if (Array.isArray(v)) {
      // A short list of scalars is shown; another list by its length.
      if (v.length <= 3 && v.every(scalar)) return short(`[${v.map(value).join(", ")}]`, MAX_VALUE);
      return `[${v.length} items]`;
    }
    switch (typeof v) {
      case "string":
        return short(v, MAX_VALUE);
      case "number":
      case "boolean":
        return String(v);
      case "object":
        return "{…}";
    }
    return "";
  }

  // propSummary returns the summary of properties (an object), or "" when
  // there are none.
  function propSummary(p) {
    if (!p || typeof p !== "object" || Array.isArray(p)) return "";
    const names = Object.keys(p);
    const parts = names.slice(0, MAX_ENTRIES).map((k) => `${short(k, MAX_NAME)}: ${value(p[k])}`);
    if (names.length > MAX_ENTRIES) parts.push(`+${names.length - MAX_ENTRIES} more`);
    return short(parts.join(" · "), MAX_TEXT);
  }

  root.skyjoinPropSummary = propSummary;
})(globalThis);
