// Package secretserver is the paper's Secret Server and its client. The
// server safeguards a user's presentation key — or one slice of it, when the
// client spreads the key over several servers and XORs the slices back
// together (paper, footnote 1) — and gives it back only after the user has
// proved who they are with a TOTP code or a one-time code sent to a
// destination they control. It can also pay a small amount of cryptocurrency
// to a new user's address once (paper, Initial Bootstrap Process step 6).
//
// The server is an http.Handler with a JSON API under /v1/ (documented in
// docs/SECRET-SERVER.md), state in an encrypted Badger database, per-IP rate
// limits, per-user lockout and capped request bodies. The Client speaks that
// API and returns typed errors (ErrUnknownUser, ErrBadCode, ...).
//
// The package does not import keyring, so that keyring's bootstrap and
// sign-on code can import it without a cycle; slices are plain [32]byte
// values (convertible to keyring.Key).
package secretserver
