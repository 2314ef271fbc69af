package secretserver

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"
)

// TOTP parameters: what every authenticator app supports (RFC 6238 with
// HMAC-SHA1, 6 digits, 30-second steps), with one step of clock skew
// either way.
const (
	totpPeriod = 30
	totpSkew   = 1
	totpDigits = otp.DigitsSix
)

// newTOTP creates a TOTP secret (160 bits, RFC 4226's recommendation) and
// its otpauth:// URI for authenticator apps.
func newTOTP(issuer, user string) (secret, uri string, err error) {
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer:      issuer,
		AccountName: user,
		Period:      totpPeriod,
		SecretSize:  20,
		Digits:      totpDigits,
		Algorithm:   otp.AlgorithmSHA1,
	})
	if err != nil {
		return "", "", fmt.Errorf("generating TOTP secret: %w", err)
	}
	return key.Secret(), key.URL(), nil
}

// newCode draws a uniformly random code of CodeDigits digits, stores its
// HMAC (not the code) in rec with its expiry, and returns it for sending.
func (s *Server) newCode(uk [32]byte, rec *record, now time.Time) (string, error) {
	max := big.NewInt(1)
	for range s.cfg.CodeDigits {
		max.Mul(max, big.NewInt(10))
	}
	n, err := rand.Int(rand.Reader, max)
	if err != nil {
		return "", fmt.Errorf("drawing a code: %w", err)
	}
	code := fmt.Sprintf("%0*d", s.cfg.CodeDigits, n)
	rec.CodeMAC = s.keys.codeMAC(uk, code)
	rec.CodeExpires = now.Add(s.cfg.CodeTTL)
	rec.CodeSent = now
	return code, nil
}

// checkCode reports whether code is valid for rec at now, and for TOTP the
// time step it matched. Its work does not depend on how close the guess is
// or on whether a code is in flight: every candidate is computed and
// compared in constant time, so response timing tells an attacker nothing
// about the code.
func (s *Server) checkCode(uk [32]byte, rec *record, code string, now time.Time) (bool, int64) {
	switch rec.Method {
	case MethodTOTP:
		cur := now.Unix() / totpPeriod
		okAll, step := 0, int64(0)
		for d := int64(-totpSkew); d <= totpSkew; d++ {
			st := cur + d
			want, err := hotp.GenerateCodeCustom(rec.TOTPSecret, uint64(st), hotp.ValidateOpts{Digits: totpDigits, Algorithm: otp.AlgorithmSHA1})
			if err != nil {
				return false, 0
			}
			// A step is accepted once: replaying a code, or an older
			// code of the same window, fails.
			match := subtle.ConstantTimeCompare([]byte(want), []byte(code)) & boolInt(st > rec.LastTOTPStep)
			if match == 1 {
				step = st
			}
			okAll |= match
		}
		return okAll == 1, step
	case MethodCode:
		got := s.keys.codeMAC(uk, code)
		want, live := rec.CodeMAC, 1
		if len(want) == 0 {
			want, live = s.dummyMAC, 0
		}
		eq := 0
		if hmac.Equal(got, want) {
			eq = 1
		}
		return eq&live&boolInt(now.Before(rec.CodeExpires)) == 1, 0
	}
	return false, 0
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// attempt applies the lockout policy around checkCode. On success it
// consumes the code (single use) and resets the counters in rec (the
// caller saves). On failure it records the failure — saved here, before
// answering, so a crash cannot forgive a guess — and returns the error to
// answer with.
func (s *Server) attempt(uk [32]byte, rec *record, code string, now time.Time) error {
	if now.Before(rec.LockedUntil) {
		return s.lockedErr(rec, now)
	}
	ok, step := s.checkCode(uk, rec, code, now)
	if ok {
		rec.Failures, rec.Lockouts, rec.LockedUntil = 0, 0, time.Time{}
		rec.CodeMAC, rec.CodeExpires = nil, time.Time{}
		if step > rec.LastTOTPStep {
			rec.LastTOTPStep = step
		}
		return nil
	}
	rec.Failures++
	pol := s.cfg.Lockout
	if rec.Failures >= pol.MaxFailures {
		rec.Lockouts++
		d := pol.BaseDuration
		for i := 1; i < rec.Lockouts && d < pol.MaxDuration; i++ {
			d *= 2
		}
		d = min(d, pol.MaxDuration)
		rec.LockedUntil = now.Add(d)
		rec.Failures = 0
		// The code in flight dies with the lockout.
		rec.CodeMAC, rec.CodeExpires = nil, time.Time{}
		if err := s.save(uk, rec); err != nil {
			return err
		}
		s.log.Warn("user locked out after wrong codes", "user", logID(uk), "lockouts", rec.Lockouts, "until", rec.LockedUntil)
		return s.lockedErr(rec, now)
	}
	if err := s.save(uk, rec); err != nil {
		return err
	}
	s.log.Info("wrong code", "user", logID(uk), "failures", rec.Failures)
	return &apiError{status: http.StatusUnauthorized, code: codeBadCode, msg: ErrBadCode.Error(), attemptsLeft: pol.MaxFailures - rec.Failures}
}

func (s *Server) lockedErr(rec *record, now time.Time) *apiError {
	return &apiError{
		status:     http.StatusLocked,
		code:       codeLockedOut,
		msg:        fmt.Sprintf("%s (until %s)", ErrLockedOut, rec.LockedUntil.UTC().Format(time.RFC3339)),
		retryAfter: rec.LockedUntil.Sub(now),
	}
}

// Sessions: a successful verification yields a random bearer token valid
// for SessionTTL. Only its SHA-256 is kept, in memory: a restart ends all
// sessions, which costs a user one more code at worst.

func (s *Server) newSession(uk [32]byte, user string, now time.Time) (sessionJSON, error) {
	var tok [32]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return sessionJSON{}, fmt.Errorf("session token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(tok[:])
	exp := now.Add(s.cfg.SessionTTL)
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if len(s.sessions) >= s.cfg.MaxSessions {
		for h, se := range s.sessions {
			if !now.Before(se.expires) {
				delete(s.sessions, h)
			}
		}
		if len(s.sessions) >= s.cfg.MaxSessions {
			return sessionJSON{}, errorf(http.StatusServiceUnavailable, codeUnavailable, "too many sessions; retry in a few minutes")
		}
	}
	s.sessions[sha256.Sum256([]byte(token))] = session{uk: uk, user: user, expires: exp}
	return sessionJSON{Token: token, ExpiresAt: exp.UTC()}, nil
}

// session authenticates a request by its "Authorization: Bearer" token.
func (s *Server) session(r *http.Request) (session, error) {
	auth := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || len(token) != 43 {
		return session{}, errSession
	}
	h := sha256.Sum256([]byte(token))
	now := s.now()
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	se, ok := s.sessions[h]
	if !ok {
		return session{}, errSession
	}
	if !now.Before(se.expires) {
		delete(s.sessions, h)
		return session{}, errSession
	}
	return se, nil
}
