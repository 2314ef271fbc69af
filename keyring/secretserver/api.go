package secretserver

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
)

// APIVersion is the version in the URL prefix (/v1/).
const APIVersion = 1

// SliceSize is the size of a presentation key or key slice.
const SliceSize = 32

// Verification methods.
const (
	// MethodTOTP: RFC 6238 codes from an authenticator app (SHA-1, 6 digits,
	// 30-second steps, the parameters every app supports).
	MethodTOTP = "totp"
	// MethodCode: a one-time code the server sends to a destination (an
	// e-mail address, a phone number...) through the operator's Sender.
	MethodCode = "code"
)

// Limits on what requests may carry.
const (
	// MaxBodyBytes caps every request body; larger ones get 413.
	MaxBodyBytes = 16 << 10
	// MinUserLen and MaxUserLen bound user ids (after normalisation).
	MinUserLen = 3
	MaxUserLen = 128
	// MaxDestinationLen bounds a code destination (RFC 5321's path limit).
	MaxDestinationLen = 254
	// MaxAddressLen bounds a faucet address (base58 or bech32).
	MaxAddressLen = 100
)

// Wire types. JSON field names are the API; see docs/SECRET-SERVER.md.

type enrolRequest struct {
	User        string `json:"user"`
	Method      string `json:"method"`
	Destination string `json:"destination,omitempty"`
	Slice       string `json:"slice"` // base64 (standard, padded) of 32 bytes
}

type enrolResponse struct {
	User          string     `json:"user"`
	Method        string     `json:"method"`
	State         string     `json:"state"` // "pending"
	ConfirmBy     time.Time  `json:"confirm_by"`
	CodeExpiresAt *time.Time `json:"code_expires_at,omitempty"`
	Destination   string     `json:"destination,omitempty"` // masked
	TOTPURI       string     `json:"totp_uri,omitempty"`
	TOTPSecret    string     `json:"totp_secret,omitempty"`
}

type codeRequest struct {
	User string `json:"user"`
	Code string `json:"code"`
}

type userRequest struct {
	User string `json:"user"`
}

type challengeResponse struct {
	Method      string     `json:"method"`
	Destination string     `json:"destination,omitempty"` // masked
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
}

type sessionJSON struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

type sessionResponse struct {
	User    string      `json:"user"`
	State   string      `json:"state"`
	Session sessionJSON `json:"session"`
}

type sliceJSON struct {
	Slice string `json:"slice"`
}

type faucetRequest struct {
	Address string `json:"address"`
}

type faucetResponse struct {
	TxID string `json:"txid"`
}

type healthResponse struct {
	Status  string   `json:"status"`
	Version int      `json:"version"`
	Methods []string `json:"methods"`
	Faucet  bool     `json:"faucet"`
}

type errorBody struct {
	Error errorJSON `json:"error"`
}

type errorJSON struct {
	Code         string `json:"code"`
	Message      string `json:"message"`
	RetryAfter   int64  `json:"retry_after,omitempty"` // seconds
	AttemptsLeft int    `json:"attempts_left,omitempty"`
	TxID         string `json:"txid,omitempty"`
}

// decodeJSON reads exactly one JSON object of type T from r: unknown
// fields, trailing data and bodies over MaxBodyBytes are refused. It never
// panics; size errors are reported as *apiError with status 413.
func decodeJSON[T any](r io.Reader, dst *T) error {
	// One byte over the cap tells "exactly at the cap" from "over it".
	data, err := io.ReadAll(io.LimitReader(r, MaxBodyBytes+1))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "request body exceeds %d bytes", MaxBodyBytes)
		}
		return invalid("reading body: %v", err)
	}
	if len(data) > MaxBodyBytes {
		return errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "request body exceeds %d bytes", MaxBodyBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return invalid("body is not the expected JSON object: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid("trailing data after the JSON object")
	}
	return nil
}

// normaliseUser returns the canonical form of a user id: trimmed, ASCII
// lower case, 3–128 characters from a-z 0-9 . _ - @ +, starting with a
// letter, digit or '+'. E-mail addresses and E.164 phone numbers fit.
func normaliseUser(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) < MinUserLen || len(s) > MaxUserLen {
		return "", invalid("user id must be %d to %d characters", MinUserLen, MaxUserLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' ||
			i > 0 && (c == '.' || c == '_' || c == '-' || c == '@')
		if !ok {
			return "", invalid("user id has an invalid character %q at position %d (allowed: a-z 0-9 . _ - @ +, starting with a letter, digit or +)", c, i+1)
		}
	}
	return s, nil
}

// validDestination accepts printable ASCII without spaces, not starting
// with '-': the destination reaches an operator's command, which must never
// mistake it for an option, and the file sender's line format.
func validDestination(s string) error {
	if s == "" || len(s) > MaxDestinationLen {
		return invalid("destination must be 1 to %d characters", MaxDestinationLen)
	}
	if s[0] == '-' {
		return invalid("destination must not start with '-'")
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= 0x20 || s[i] >= 0x7f {
			return invalid("destination has an invalid character at position %d (printable ASCII, no spaces)", i+1)
		}
	}
	return nil
}

// normaliseCode strips spaces and dashes a user may type and requires 6 to
// 8 digits.
func normaliseCode(s string) (string, error) {
	if len(s) > 32 {
		return "", invalid("code must be 6 to 8 digits")
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '-':
		case c >= '0' && c <= '9':
			b.WriteByte(c)
		default:
			return "", invalid("code must be 6 to 8 digits")
		}
	}
	if b.Len() < 6 || b.Len() > 8 {
		return "", invalid("code must be 6 to 8 digits")
	}
	return b.String(), nil
}

// decodeSlice decodes a base64 slice of exactly 32 bytes, not all zero (an
// all-zero slice is a client bug, never a key).
func decodeSlice(s string) ([SliceSize]byte, error) {
	var out [SliceSize]byte
	if len(s) > 64 {
		return out, invalid("slice must be %d bytes in base64", SliceSize)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != SliceSize {
		return out, invalid("slice must be %d bytes in base64", SliceSize)
	}
	copy(out[:], b)
	clear(b)
	if out == ([SliceSize]byte{}) {
		return out, invalid("slice is all zeros")
	}
	return out, nil
}

func validAddress(s string) error {
	if s == "" || len(s) > MaxAddressLen {
		return invalid("address must be 1 to %d characters", MaxAddressLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return invalid("address has an invalid character at position %d", i+1)
		}
	}
	return nil
}

// maskDestination shows enough of a destination for the user to recognise
// it and little for anyone else: "a***@example.org", "***67".
func maskDestination(d string) string {
	if at := strings.LastIndexByte(d, '@'); at > 0 {
		return d[:1] + "***" + d[at:]
	}
	if len(d) <= 2 {
		return "***"
	}
	return "***" + d[len(d)-2:]
}
