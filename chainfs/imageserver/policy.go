package imageserver

import (
	"fmt"
	"strconv"
	"strings"
)

// Policy is what an image server accepts and charges (paper: "Image
// Servers may set policies for hosting their images"). Prices are in
// satoshis; zero means free. A quote that is not free asks at least
// DustLimit.
type Policy struct {
	// MaxSize is the largest upload (and patched image). Default 1 GiB.
	MaxSize int64
	// PricePerMBDay is the hosting price of private images and encrypted
	// blobs, per started MiB per day.
	PricePerMBDay int64
	// PublicPricePerMBDay is the hosting price of public images (zero:
	// "host public images for free").
	PublicPricePerMBDay int64
	// DownloadPricePerMB is charged per started MiB of a download quote
	// (zero: free downloads). A paid download ticket serves up to twice
	// the image's size, within Config.TicketTTL.
	DownloadPricePerMB int64
	// MinDays and MaxDays bound a hosting period. Defaults 1 and 3650.
	MinDays, MaxDays int
	// RefusePublic and RefusePrivate turn away public images, or private
	// images and blobs.
	RefusePublic, RefusePrivate bool
}

func (p *Policy) setDefaults() error {
	if p.MaxSize <= 0 {
		p.MaxSize = 1 << 30
	}
	if p.MinDays <= 0 {
		p.MinDays = 1
	}
	if p.MaxDays <= 0 {
		p.MaxDays = 3650
	}
	switch {
	case p.MinDays > p.MaxDays:
		return fmt.Errorf("image server policy: min-days %d exceeds max-days %d", p.MinDays, p.MaxDays)
	case p.PricePerMBDay < 0 || p.PublicPricePerMBDay < 0 || p.DownloadPricePerMB < 0:
		return fmt.Errorf("image server policy: prices cannot be negative")
	case p.RefusePublic && p.RefusePrivate:
		return fmt.Errorf("image server policy: refuses both public and private content")
	}
	return nil
}

// Paid reports whether anything costs money under p: then payments are
// checked on a chain (Config.Chain) to the payment key's addresses.
func (p Policy) Paid() bool {
	return p.PricePerMBDay > 0 || p.PublicPricePerMBDay > 0 || p.DownloadPricePerMB > 0
}

// amount is the price of size bytes for days days at price per MiB-day:
// per started MiB, at least DustLimit unless free, saturating rather than
// overflowing.
func amount(size int64, days int, price int64) int64 {
	if price <= 0 || size <= 0 {
		return 0
	}
	mb := (size + MiB - 1) / MiB
	const maxSat = 21_000_000 * 100_000_000 // every satoshi there will be
	d := int64(max(days, 1))
	a := mb * d
	if a/d != mb || a > maxSat/price {
		return maxSat
	}
	return max64(a*price, DustLimit)
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// ParsePolicy parses the --policy flag: comma-separated key=value pairs
// over DefaultPolicy's zero values:
//
//	max-size=SIZE         largest upload (bytes, or with KiB, MiB, GiB, TiB)
//	price=SAT             sat per MiB per day, private images and blobs
//	public-price=SAT      sat per MiB per day, public images
//	download-price=SAT    sat per MiB downloaded
//	min-days=N, max-days=N
//	public=yes|no, private=yes|no
//
// Example: "max-size=2GiB,price=10,public-price=0,download-price=1".
func ParsePolicy(s string) (Policy, error) {
	var p Policy
	if strings.TrimSpace(s) == "" {
		return p, p.setDefaults()
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || v == "" {
			return Policy{}, fmt.Errorf("image server policy: %q is not key=value", kv)
		}
		var err error
		switch k {
		case "max-size":
			p.MaxSize, err = parseSize(v)
		case "price":
			p.PricePerMBDay, err = parseInt(v)
		case "public-price":
			p.PublicPricePerMBDay, err = parseInt(v)
		case "download-price":
			p.DownloadPricePerMB, err = parseInt(v)
		case "min-days", "max-days":
			var n int64
			if n, err = parseInt(v); err == nil && n > 100_000 {
				err = fmt.Errorf("too many days")
			}
			if k == "min-days" {
				p.MinDays = int(n)
			} else {
				p.MaxDays = int(n)
			}
		case "public", "private":
			var refuse bool
			switch v {
			case "yes", "true":
			case "no", "false":
				refuse = true
			default:
				err = fmt.Errorf("want yes or no")
			}
			if k == "public" {
				p.RefusePublic = refuse
			} else {
				p.RefusePrivate = refuse
			}
		default:
			return Policy{}, fmt.Errorf("image server policy: unknown key %q (want max-size, price, public-price, download-price, min-days, max-days, public, private)", k)
		}
		if err != nil {
			return Policy{}, fmt.Errorf("image server policy: %s=%s: %w", k, v, err)
		}
	}
	return p, p.setDefaults()
}

func parseInt(v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("want a non-negative integer")
	}
	return n, nil
}

func parseSize(v string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		s string
		m int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if strings.HasSuffix(v, u.s) {
			v, mult = strings.TrimSuffix(v, u.s), u.m
			break
		}
	}
	n, err := parseInt(v)
	if err != nil || n == 0 || n > (1<<41)/mult {
		return 0, fmt.Errorf("want a size such as 500MiB (at most 2 TiB)")
	}
	return n * mult, nil
}
