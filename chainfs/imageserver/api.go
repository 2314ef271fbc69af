package imageserver

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// APIVersion is the version in the URL prefix (/v1/).
const APIVersion = 1

// Limits on what requests may carry.
const (
	// MaxJSONBytes caps every JSON request body; larger ones get 413.
	MaxJSONBytes = 16 << 10
	// MaxReplyBytes caps what the client reads of a JSON reply.
	MaxReplyBytes = 64 << 10
	// MiB is the pricing unit: prices are per started MiB.
	MiB = 1 << 20
	// DustLimit is the smallest payment a quote asks for: outputs below
	// it are not relayed (the wallet refuses them too).
	DustLimit = 546
)

// Quote kinds.
const (
	KindUpload   = "upload"
	KindDownload = "download"
)

// Signed actions (see the canonical message in sign.go).
const (
	ActionOwn     = "own"
	ActionPatch   = "patch"
	ActionRelease = "release"
	ActionForward = "forward"
)

// Stored content kinds.
const (
	ContentImage = "image" // an integrity image (chainfs/image)
	ContentBlob  = "blob"  // an encrypted chainfs/blob blob
)

// Request headers of the binary endpoints.
const (
	HeaderQuote     = "X-Integrity-Quote"
	HeaderOwner     = "X-Integrity-Owner"           // hex compressed public key
	HeaderSignature = "X-Integrity-Owner-Signature" // hex DER ECDSA signature
	HeaderNonce     = "X-Integrity-Nonce"           // hex 32-byte challenge
	HeaderNewHash   = "X-Integrity-New-Hash"        // hex SHA-256
)

// Wire types. JSON field names are the API; see docs/IMAGE-SERVER.md.

type infoResponse struct {
	Status   string     `json:"status"`
	Version  int        `json:"version"`
	Network  string     `json:"network,omitempty"`
	Policy   policyJSON `json:"policy"`
	Forward  bool       `json:"forward"`
	Payments bool       `json:"payments"`
	// NextPaymentIndex is the payment key's next child index: quotes so
	// far were paid to children below it (none when Payments is false).
	NextPaymentIndex *uint64 `json:"next_payment_index,omitempty"`
}

type policyJSON struct {
	MaxSize             int64 `json:"max_size"`
	PricePerMBDay       int64 `json:"price_per_mb_day"`
	PublicPricePerMBDay int64 `json:"public_price_per_mb_day"`
	DownloadPricePerMB  int64 `json:"download_price_per_mb"`
	MinDays             int   `json:"min_days"`
	MaxDays             int   `json:"max_days"`
	AcceptPublic        bool  `json:"accept_public"`
	AcceptPrivate       bool  `json:"accept_private"`
	MinConfirmations    int   `json:"min_confirmations"`
}

type quoteRequest struct {
	Kind   string `json:"kind"`
	Hash   string `json:"hash"`
	Size   int64  `json:"size,omitempty"`
	Days   int    `json:"days,omitempty"`
	Public bool   `json:"public,omitempty"`
}

type quoteJSON struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	Hash      string    `json:"hash"`
	Size      int64     `json:"size"`
	Days      int       `json:"days,omitempty"`
	Public    bool      `json:"public"`
	Amount    int64     `json:"amount"`
	Address   string    `json:"address,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
	Challenge string    `json:"challenge,omitempty"`
	Paid      bool      `json:"paid"`
	Received  int64     `json:"received"`
	TxIDs     []string  `json:"txids,omitempty"`
	Used      bool      `json:"used"`
}

type payRequest struct {
	TxID string `json:"txid,omitempty"`
}

type hostedJSON struct {
	Hash        string    `json:"hash"`
	Size        int64     `json:"size"`
	Content     string    `json:"content"`
	Public      bool      `json:"public"`
	HostedUntil time.Time `json:"hosted_until"`
	Owners      int       `json:"owners"`
	Parent      string    `json:"parent,omitempty"`
	// DownloadPrice is what a download quote for it costs (0: free).
	DownloadPrice int64 `json:"download_price"`
}

type challengeRequest struct {
	Hash   string `json:"hash"`
	Action string `json:"action"`
}

type challengeResponse struct {
	Nonce     string    `json:"nonce"`
	ExpiresAt time.Time `json:"expires_at"`
}

type signedJSON struct {
	Nonce     string `json:"nonce"`
	PublicKey string `json:"public_key"`
	Signature string `json:"signature"`
}

type releaseRequest struct {
	signedJSON
}

type releaseResponse struct {
	Deleted     bool      `json:"deleted"`
	HostedUntil time.Time `json:"hosted_until,omitzero"`
}

type forwardRequest struct {
	signedJSON
	To    string `json:"to"`
	Quote string `json:"quote"`
	// The owner registration for the target server: a signature of the
	// target quote's challenge (action "own"), passed on as is.
	TargetPublicKey string `json:"target_public_key,omitempty"`
	TargetSignature string `json:"target_signature,omitempty"`
}

type forwardResponse struct {
	Hash string     `json:"hash"`
	To   string     `json:"to"`
	At   hostedJSON `json:"hosted"`
}

// extendRequest extends the hosting of content already held
// (POST /v1/images/{hash}/extend).
type extendRequest struct {
	// Quote is a paid, unused upload quote for the hash and exact size,
	// of the content's visibility.
	Quote string `json:"quote"`
	// PublicKey, if it holds the content, has its hold extended; else
	// (or absent) the anonymous hold is. No signature: it grants nothing.
	PublicKey string `json:"public_key,omitempty"`
}

type extendResponse struct {
	hostedJSON
	// HoldUntil is the end of the hold the quote paid for (hosted_until
	// is the content's, which another hold may set later).
	HoldUntil time.Time `json:"hold_until"`
	// OwnerHold: the public key's own hold was extended (false: the
	// anonymous hold).
	OwnerHold bool `json:"owner_hold"`
}

type errorBody struct {
	Error errorJSON `json:"error"`
}

type errorJSON struct {
	Code       string `json:"code"`
	Message    string `json:"message"`
	RetryAfter int64  `json:"retry_after,omitempty"`
	// Unpaid: what the quote asks and what has arrived.
	Amount   int64 `json:"amount,omitempty"`
	Received int64 `json:"received,omitempty"`
}

// decodeJSON reads one JSON object of at most MaxJSONBytes, refusing
// unknown fields and trailing data.
func decodeJSON[T any](r io.Reader, dst *T) error {
	data, err := io.ReadAll(io.LimitReader(r, MaxJSONBytes+1))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "request body exceeds %d bytes", MaxJSONBytes)
		}
		return invalid("reading body: %v", err)
	}
	if len(data) > MaxJSONBytes {
		return errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "request body exceeds %d bytes", MaxJSONBytes)
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

// parseHash decodes a lower-case hex SHA-256 (64 characters).
func parseHash(s, what string) ([32]byte, error) {
	var h [32]byte
	if len(s) != 64 {
		return h, invalid("%s must be 64 hex digits", what)
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil || hex.EncodeToString(h[:]) != s {
		return h, invalid("%s must be 64 lower-case hex digits", what)
	}
	return h, nil
}

// parseHex decodes lower-case hex of at most max bytes.
func parseHex(s, what string, max int) ([]byte, error) {
	if s == "" || len(s) > 2*max || len(s)%2 != 0 {
		return nil, invalid("%s must be 1 to %d bytes of hex", what, max)
	}
	b, err := hex.DecodeString(s)
	if err != nil || hex.EncodeToString(b) != s {
		return nil, invalid("%s must be lower-case hex", what)
	}
	return b, nil
}

// validID checks a quote id: 32 lower-case hex digits.
func validID(s string) error {
	if len(s) != 32 {
		return invalid("quote id must be 32 hex digits")
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return invalid("quote id must be lower-case hex")
		}
	}
	return nil
}

// validTxID checks a transaction id as block explorers print it.
func validTxID(s string) error {
	if _, err := parseHash(s, "txid"); err != nil {
		return err
	}
	return nil
}

// parseRange parses a single-range Range header ("bytes=a-b", "bytes=a-",
// "bytes=-n") against a size. ok is false when there is no header.
func parseRange(h string, size int64) (off, n int64, ok bool, err error) {
	if h == "" {
		return 0, size, false, nil
	}
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.ContainsAny(spec, ", ") {
		return 0, 0, true, errRange("only one range of the form bytes=a-b is served")
	}
	a, b, found := strings.Cut(spec, "-")
	if !found {
		return 0, 0, true, errRange("malformed range")
	}
	num := func(s string) (int64, error) {
		if s == "" || len(s) > 18 || strings.Trim(s, "0123456789") != "" {
			return 0, errors.New("bad number")
		}
		return strconv.ParseInt(s, 10, 64)
	}
	switch {
	case a == "":
		k, err := num(b)
		if err != nil || k == 0 {
			return 0, 0, true, errRange("malformed suffix range")
		}
		k = min(k, size)
		return size - k, k, true, nil
	default:
		start, err := num(a)
		if err != nil {
			return 0, 0, true, errRange("malformed range start")
		}
		if start >= size {
			return 0, 0, true, errRange(fmt.Sprintf("range starts at %d, past the %d-byte content", start, size))
		}
		end := size - 1
		if b != "" {
			if end, err = num(b); err != nil || end < start {
				return 0, 0, true, errRange("malformed range end")
			}
			end = min(end, size-1)
		}
		return start, end - start + 1, true, nil
	}
}

func errRange(msg string) *apiError {
	return errorf(http.StatusRequestedRangeNotSatisfiable, codeRange, "%s", msg)
}
