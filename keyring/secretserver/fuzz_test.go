package secretserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
)

// FuzzDecodeRequests feeds arbitrary bodies to the request decoder and
// validators of every endpoint. They must never panic, must fail only with
// an *apiError (a clean 4xx), and what they accept must survive a round
// trip.
func FuzzDecodeRequests(f *testing.F) {
	f.Add([]byte(`{"user":"alice","method":"code","destination":"a@b.c","slice":"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="}`))
	f.Add([]byte(`{"user":"alice","code":"123 456"}`))
	f.Add([]byte(`{"address":"mxAddr"}`))
	f.Add([]byte(`{"slice":"AAAA"}`))
	f.Add([]byte(`{"user":"a"}{"user":"b"}`))
	f.Add([]byte(`[]`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		check := func(err error) {
			if err == nil {
				return
			}
			var ae *apiError
			if !errors.As(err, &ae) || ae.status < 400 || ae.status > 499 {
				t.Fatalf("decoder error is not a 4xx apiError: %v", err)
			}
		}
		var er enrolRequest
		if err := decodeJSON(bytes.NewReader(body), &er); err == nil {
			u, err := normaliseUser(er.User)
			check(err)
			if err == nil {
				if again, err := normaliseUser(u); err != nil || again != u {
					t.Fatalf("user id %q not idempotent", u)
				}
			}
			check(validDestination(er.Destination))
			s, err := decodeSlice(er.Slice)
			check(err)
			if err == nil && s == ([SliceSize]byte{}) {
				t.Fatal("zero slice accepted")
			}
			_ = maskDestination(er.Destination)
		} else {
			check(err)
		}
		var cr codeRequest
		if err := decodeJSON(bytes.NewReader(body), &cr); err == nil {
			c, err := normaliseCode(cr.Code)
			check(err)
			if err == nil && (len(c) < 6 || len(c) > 8) {
				t.Fatalf("code %q accepted", c)
			}
		} else {
			check(err)
		}
		var ur userRequest
		check(decodeJSON(bytes.NewReader(body), &ur))
		var sj sliceJSON
		check(decodeJSON(bytes.NewReader(body), &sj))
		var fr faucetRequest
		if err := decodeJSON(bytes.NewReader(body), &fr); err == nil {
			check(validAddress(fr.Address))
		} else {
			check(err)
		}
	})
}

// FuzzHandler sends arbitrary bodies to every endpoint of a real server
// (real Badger in a temporary directory). It must never panic and never
// answer 5xx, and every error answer must be the JSON error shape.
func FuzzHandler(f *testing.F) {
	dir := f.TempDir()
	srv, err := New(Config{
		DataDir: filepath.Join(dir, "data"),
		Sender:  NewFileSender(filepath.Join(dir, "codes")),
		Faucet:  &fakeFaucet{},
		IPRate:  RateLimit{PerSecond: 1e9, Burst: 1 << 30},
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	type ep struct{ method, path string }
	eps := []ep{
		{"POST", "/v1/enrol"}, {"POST", "/v1/enrol/confirm"}, {"POST", "/v1/challenge"},
		{"POST", "/v1/verify"}, {"GET", "/v1/slice"}, {"PUT", "/v1/slice"},
		{"POST", "/v1/faucet"}, {"GET", "/v1/health"}, {"DELETE", "/v1/enrol"},
	}
	f.Add(uint8(0), []byte(`{"user":"fuzz-user","method":"totp","slice":"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="}`), "")
	f.Add(uint8(0), []byte(`{"user":"fuzz-user2","method":"code","destination":"x@y","slice":"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="}`), "")
	f.Add(uint8(3), []byte(`{"user":"fuzz-user","code":"123456"}`), "")
	f.Add(uint8(5), []byte(`{"slice":"AAAA"}`), "Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, which uint8, body []byte, auth string) {
		e := eps[int(which)%len(eps)]
		req := httptest.NewRequest(e.method, e.path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s answered %d: %s", e.method, e.path, rec.Code, rec.Body.String())
		}
		if rec.Code >= 400 {
			var eb errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error.Code == "" {
				t.Fatalf("error answer is not JSON: %q", rec.Body.String())
			}
		}
		if rec.Code == http.StatusOK && e.path == "/v1/slice" && e.method == "GET" {
			t.Fatalf("slice returned to a fuzzed token %q", auth)
		}
	})
}
