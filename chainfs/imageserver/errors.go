package imageserver

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/integrity-sys/integrity/chainfs/blob"
)

// Errors callers can test with errors.Is. The Client returns an *Error
// that unwraps to one of them; connection failures wrap ErrUnavailable.
// ErrNotFound and ErrHashMismatch also wrap blob's, so a blob.Multi over
// image servers treats them as it treats any store's.
var (
	ErrUnpaid          = errors.New("payment required: the quote has not been paid (enough) on chain")
	ErrPaymentUsed     = errors.New("this quote's payment has already been used")
	ErrQuoteExpired    = errors.New("the quote has expired: ask for a new one")
	ErrTooLarge        = errors.New("too large for this image server's policy")
	ErrRefused         = errors.New("refused by this image server's policy")
	ErrBadSignature    = errors.New("bad signature: the message was not signed by this key, or the challenge is unknown, used or expired")
	ErrNotOwner        = errors.New("the signing key does not own this image on this server")
	ErrTooManyHolders  = errors.New("this image has as many holders as the server keeps: only an existing holder can extend its hold")
	ErrNotFound        = fmt.Errorf("image server: %w", blob.ErrNotFound)
	ErrHashMismatch    = fmt.Errorf("image server: %w", blob.ErrHashMismatch)
	ErrInvalidRequest  = errors.New("invalid request")
	ErrInvalidContent  = errors.New("not a valid integrity image or blob")
	ErrRateLimited     = errors.New("too many requests: slow down and retry later")
	ErrBusy            = errors.New("the image server is busy: retry later")
	ErrNoForward       = errors.New("this image server does not forward uploads")
	ErrForwardFailed   = errors.New("forwarding to the other image server failed")
	ErrChain           = errors.New("the image server cannot reach its chain")
	ErrServer          = errors.New("image server internal error")
	ErrUnavailable     = errors.New("image server unavailable")
	ErrUnexpectedReply = errors.New("unexpected reply from the image server")
)

// Machine-readable error codes of the wire format ({"error":{"code":...}}).
const (
	codeInvalidRequest = "invalid_request"
	codeTooLarge       = "too_large"
	codeRefused        = "refused"
	codeUnpaid         = "unpaid"
	codePaymentUsed    = "payment_used"
	codeQuoteExpired   = "quote_expired"
	codeBadSignature   = "bad_signature"
	codeNotOwner       = "not_owner"
	codeTooManyHolders = "too_many_holders"
	codeNotFound       = "not_found"
	codeHashMismatch   = "hash_mismatch"
	codeInvalidContent = "invalid_content"
	codeRange          = "range"
	codeRateLimited    = "rate_limited"
	codeBusy           = "busy"
	codeNoForward      = "no_forward"
	codeForwardFailed  = "forward_failed"
	codeChain          = "chain_unavailable"
	codeInternal       = "internal"
	codeUnavailable    = "unavailable"
)

var codeSentinels = map[string]error{
	codeInvalidRequest: ErrInvalidRequest,
	codeTooLarge:       ErrTooLarge,
	codeRefused:        ErrRefused,
	codeUnpaid:         ErrUnpaid,
	codePaymentUsed:    ErrPaymentUsed,
	codeQuoteExpired:   ErrQuoteExpired,
	codeBadSignature:   ErrBadSignature,
	codeNotOwner:       ErrNotOwner,
	codeTooManyHolders: ErrTooManyHolders,
	codeNotFound:       ErrNotFound,
	codeHashMismatch:   ErrHashMismatch,
	codeInvalidContent: ErrInvalidContent,
	codeRange:          ErrInvalidRequest,
	codeRateLimited:    ErrRateLimited,
	codeBusy:           ErrBusy,
	codeNoForward:      ErrNoForward,
	codeForwardFailed:  ErrForwardFailed,
	codeChain:          ErrChain,
	codeInternal:       ErrServer,
	codeUnavailable:    ErrUnavailable,
}

// Error is an error answered by an image server. errors.Is(err, ErrX)
// works through Unwrap.
type Error struct {
	Status  int    // HTTP status
	Code    string // machine-readable code, e.g. "unpaid"
	Message string // human-readable, from the server
	// RetryAfter is set for rate_limited and busy.
	RetryAfter time.Duration
	// Amount and Received are set for unpaid: what the quote asks and
	// what the server has seen arrive.
	Amount, Received int64
	// URL is the server's base URL.
	URL string

	sentinel error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("image server at %s: %s", e.URL, e.Message)
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry in %s)", e.RetryAfter.Round(time.Second))
	}
	return s
}

func (e *Error) Unwrap() error { return e.sentinel }

// apiError is what handlers return: it becomes the JSON error body.
type apiError struct {
	status     int
	code       string
	msg        string
	retryAfter time.Duration
	amount     int64
	received   int64
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, codeInvalidRequest, "invalid request: "+format, args...)
}

// tooManyHolders refuses a new holder of hash (imageRec.addHold).
func tooManyHolders(hash [32]byte) *apiError {
	return errorf(http.StatusConflict, codeTooManyHolders, "%s: %x has %d live holds (each pays for its own hosting; they end when paid for)", ErrTooManyHolders, hash[:8], maxHolds)
}

func notFound(hash [32]byte) *apiError {
	return errorf(http.StatusNotFound, codeNotFound, "no image %x is hosted here", hash)
}

var (
	errInternal = &apiError{status: http.StatusInternalServerError, code: codeInternal, msg: "internal error; the operator's log has details"}
	errClosed   = &apiError{status: http.StatusServiceUnavailable, code: codeUnavailable, msg: "the image server is shutting down"}
	errBadSig   = &apiError{status: http.StatusForbidden, code: codeBadSignature, msg: ErrBadSignature.Error()}
)
