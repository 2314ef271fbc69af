package main

import "testing"

// TestPrintable: a guest-chosen reason cannot move the cursor, clear the
// screen or start a new line inside integrity's question.
func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		`share "/docs" with "bob"`:          `share "/docs" with "bob"`,
		"a\x1b[2J\x1b[Hb":                   "a?[2J?[Hb",
		"x\nPassword: \r":                   "x?Password: ?",
		"é\u202eevil":                       "é?evil",
		"publish \"/Photos 2026\" (anyone)": "publish \"/Photos 2026\" (anyone)",
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}
