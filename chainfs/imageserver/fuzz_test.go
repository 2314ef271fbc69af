package imageserver

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzDecodeRequests feeds arbitrary bodies to the decoder and validators
// of every JSON endpoint. They must never panic and must fail only with
// a 4xx *apiError.
func FuzzDecodeRequests(f *testing.F) {
	h := strings.Repeat("ab", 32)
	f.Add([]byte(`{"kind":"upload","hash":"` + h + `","size":100,"days":3,"public":true}`))
	f.Add([]byte(`{"kind":"download","hash":"` + h + `"}`))
	f.Add([]byte(`{"txid":"` + h + `"}`))
	f.Add([]byte(`{"hash":"` + h + `","action":"patch"}`))
	f.Add([]byte(`{"nonce":"` + h + `","public_key":"02` + h + `","signature":"3006020101020101"}`))
	f.Add([]byte(`{"to":"https://x.example","quote":"` + h[:32] + `","nonce":"` + h + `"}`))
	f.Add([]byte(`{"quote":"` + h[:32] + `","public_key":"02` + h + `"}`))
	f.Add([]byte(`{"quote":"` + h[:32] + `"}`))
	f.Add([]byte(`{"a":1}{"b":2}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		check := func(err error) {
			if err == nil {
				return
			}
			var ae *apiError
			if !errors.As(err, &ae) || ae.status < 400 || ae.status > 499 {
				t.Fatalf("not a 4xx apiError: %v", err)
			}
		}
		var q quoteRequest
		if err := decodeJSON(bytes.NewReader(body), &q); err == nil {
			_, err := parseHash(q.Hash, "hash")
			check(err)
		} else {
			check(err)
		}
		var p payRequest
		if err := decodeJSON(bytes.NewReader(body), &p); err == nil && p.TxID != "" {
			check(validTxID(p.TxID))
		} else {
			check(err)
		}
		var c challengeRequest
		check(decodeJSON(bytes.NewReader(body), &c))
		var r releaseRequest
		if err := decodeJSON(bytes.NewReader(body), &r); err == nil {
			_, err := parseHash(r.Nonce, "nonce")
			check(err)
			_, err = parseHex(r.PublicKey, "public key", 33)
			check(err)
			if pub, err := parseHex(r.PublicKey, "k", 33); err == nil {
				if sig, err := parseHex(r.Signature, "s", maxSigLen); err == nil {
					_ = verify(pub, sig, ActionRelease, [32]byte{}, [32]byte{}, [32]byte{})
				}
			}
		} else {
			check(err)
		}
		var fw forwardRequest
		if err := decodeJSON(bytes.NewReader(body), &fw); err == nil {
			check(validID(fw.Quote))
		} else {
			check(err)
		}
		var ex extendRequest
		if err := decodeJSON(bytes.NewReader(body), &ex); err == nil {
			check(validID(ex.Quote))
			if ex.PublicKey != "" {
				_, err := parseHex(ex.PublicKey, "public key", 33)
				check(err)
			}
		} else {
			check(err)
		}
	})
}

// FuzzParseRange: any Range header gives a range inside the content or
// a 416.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-99", "bytes=5-", "bytes=-10", "bytes=1-2,3-4", "bytes=9-3", "bytes=-0", "items=1-2", ""} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size <= 0 {
			return
		}
		off, n, ranged, err := parseRange(h, size)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status != http.StatusRequestedRangeNotSatisfiable {
				t.Fatalf("bad error %v", err)
			}
			return
		}
		if off < 0 || n <= 0 || off+n > size || (!ranged && (off != 0 || n != size)) {
			t.Fatalf("%q on %d: [%d, +%d)", h, size, off, n)
		}
	})
}

// FuzzHandler sends arbitrary requests to a real server (free policy, no
// chain; real Badger and blob directory). It must never panic or answer
// 5xx, and every error body must carry a code.
func FuzzHandler(f *testing.F) {
	h := strings.Repeat("ab", 32)
	f.Add(uint8(1), "/v1/quotes", "application/json", `{"kind":"upload","hash":"`+h+`","size":10}`, "")
	f.Add(uint8(2), "/v1/images/"+h, "application/octet-stream", "0123456789", strings.Repeat("c", 32))
	f.Add(uint8(0), "/v1/images/"+h, "", "", "")
	f.Add(uint8(1), "/v1/images/"+h+"/patch", "application/octet-stream", "\x01\x00", "")
	f.Add(uint8(1), "/v1/images/"+h+"/release", "application/json", `{}`, "")
	f.Add(uint8(1), "/v1/images/"+h+"/extend", "application/json", `{"quote":"`+strings.Repeat("c", 32)+`","public_key":"02`+h+`"}`, "")
	f.Add(uint8(1), "/v1/challenges", "application/json", `{"hash":"`+h+`","action":"release"}`, "")
	f.Add(uint8(0), "/v1/quotes/"+strings.Repeat("0", 32), "", "", "")
	srv, err := New(Config{DataDir: f.TempDir(), IPRate: RateLimit{PerSecond: 1e9, Burst: 1e9}, Logger: quietLogger(), SweepInterval: -1})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	methods := []string{"GET", "POST", "PUT", "HEAD", "DELETE"}
	f.Fuzz(func(t *testing.T, m uint8, path, ctype, body, quote string) {
		method := methods[int(m)%len(methods)]
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n?#%") {
			return
		}
		req, err := http.NewRequest(method, "http://image.server"+path, strings.NewReader(body))
		if err != nil {
			return
		}
		req.RemoteAddr = "192.0.2.1:1234"
		if ctype != "" && !strings.ContainsAny(ctype, "\r\n") {
			req.Header.Set("Content-Type", ctype)
		}
		if quote != "" && !strings.ContainsAny(quote, "\r\n") {
			req.Header.Set(HeaderQuote, quote)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && !strings.Contains(rec.Body.String(), `"code"`) {
			t.Fatalf("%s %s: %d without an error code: %s", method, path, rec.Code, rec.Body)
		}
	})
}
