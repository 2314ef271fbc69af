package secretserver

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Errors callers can test with errors.Is. The Client returns an *Error that
// unwraps to one of them; connection failures wrap ErrUnavailable.
var (
	ErrUnknownUser     = errors.New("unknown user: no enrolment with this user id on the secret server")
	ErrBadCode         = errors.New("the code is wrong or has expired")
	ErrLockedOut       = errors.New("too many wrong codes: this user is locked out for now")
	ErrRateLimited     = errors.New("too many requests: slow down and retry later")
	ErrExists          = errors.New("this user id is already enrolled")
	ErrNotConfirmed    = errors.New("the enrolment has not been confirmed with a code yet")
	ErrSessionInvalid  = errors.New("the session is missing, expired or invalid: verify again")
	ErrInvalidRequest  = errors.New("invalid request")
	ErrTooLarge        = errors.New("request too large")
	ErrFaucetUsed      = errors.New("the faucet has already paid this user")
	ErrNoFaucet        = errors.New("this secret server offers no faucet")
	ErrFaucetFailed    = errors.New("the faucet could not send the payment")
	ErrSendFailed      = errors.New("the secret server could not send the code")
	ErrServer          = errors.New("secret server internal error")
	ErrUnavailable     = errors.New("secret server unavailable")
	ErrUnexpectedReply = errors.New("unexpected reply from the secret server")
)

// Machine-readable error codes of the wire format ({"error":{"code":...}}).
const (
	codeInvalidRequest = "invalid_request"
	codeTooLarge       = "too_large"
	codeUnknownUser    = "unknown_user"
	codeExists         = "exists"
	codeNotConfirmed   = "not_confirmed"
	codeBadCode        = "bad_code"
	codeLockedOut      = "locked_out"
	codeRateLimited    = "rate_limited"
	codeSession        = "session_invalid"
	codeFaucetUsed     = "faucet_used"
	codeNoFaucet       = "no_faucet"
	codeFaucetFailed   = "faucet_failed"
	codeSendFailed     = "send_failed"
	codeInternal       = "internal"
	codeUnavailable    = "unavailable"
	codeNotFound       = "not_found"
)

var codeSentinels = map[string]error{
	codeInvalidRequest: ErrInvalidRequest,
	codeTooLarge:       ErrTooLarge,
	codeUnknownUser:    ErrUnknownUser,
	codeExists:         ErrExists,
	codeNotConfirmed:   ErrNotConfirmed,
	codeBadCode:        ErrBadCode,
	codeLockedOut:      ErrLockedOut,
	codeRateLimited:    ErrRateLimited,
	codeSession:        ErrSessionInvalid,
	codeFaucetUsed:     ErrFaucetUsed,
	codeNoFaucet:       ErrNoFaucet,
	codeFaucetFailed:   ErrFaucetFailed,
	codeSendFailed:     ErrSendFailed,
	codeInternal:       ErrServer,
	codeUnavailable:    ErrUnavailable,
}

// Error is an error answered by the secret server. errors.Is(err, ErrX)
// works through Unwrap.
type Error struct {
	Status  int    // HTTP status
	Code    string // machine-readable code, e.g. "bad_code"
	Message string // human-readable, from the server
	// RetryAfter is set for locked_out and rate_limited: how long to wait.
	RetryAfter time.Duration
	// AttemptsLeft is set for bad_code: wrong codes left before lockout.
	AttemptsLeft int
	// TxID is set for faucet_used: the earlier payment.
	TxID string
	// URL is the server's base URL.
	URL string

	sentinel error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("secret server at %s: %s", e.URL, e.Message)
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry in %s)", e.RetryAfter.Round(time.Second))
	}
	if e.Code == codeBadCode && e.AttemptsLeft > 0 {
		s += fmt.Sprintf(" (%d attempts left before lockout)", e.AttemptsLeft)
	}
	return s
}

func (e *Error) Unwrap() error { return e.sentinel }

// apiError is what handlers return: it becomes the JSON error body.
type apiError struct {
	status       int
	code         string
	msg          string
	retryAfter   time.Duration
	attemptsLeft int
	txid         string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, codeInvalidRequest, "invalid request: "+format, args...)
}

var (
	errUnknownUser = &apiError{status: http.StatusNotFound, code: codeUnknownUser, msg: ErrUnknownUser.Error()}
	errSession     = &apiError{status: http.StatusUnauthorized, code: codeSession, msg: ErrSessionInvalid.Error()}
	errInternal    = &apiError{status: http.StatusInternalServerError, code: codeInternal, msg: "internal error; the operator's log has details"}
	errClosed      = &apiError{status: http.StatusServiceUnavailable, code: codeUnavailable, msg: "the secret server is shutting down"}
)
