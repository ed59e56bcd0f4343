package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/understudy/understudy/dispatch"
)

// RegionsTimeout bounds each GET /v1/regions the client sends to learn the
// deployment, so a region that hangs delays a call by at most this much.
const RegionsTimeout = 5 * time.Second

// region is one region of the deployment as GET /v1/regions last told the client.
type region struct {
	url string
	up  *bool // nil: the answering region did not know
}

// failover is one call's record of where it has been, so that it asks each region at
// most once.
type failover struct {
	tried map[string]bool  // regions the call was sent to
	dead  map[string]error // regions that failed at the transport level, and how
	asked bool             // the call has asked for /v1/regions already
}

func newFailover() *failover {
	return &failover{tried: map[string]bool{}, dead: map[string]error{}}
}

// viewKnown reports whether some region has answered GET /v1/regions.
func (c *Client) viewKnown() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.known
}

// lone reports whether the last GET /v1/regions named fewer than two regions.
func (c *Client) lone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.view) < 2
}

// learn asks for GET /v1/regions (BaseURL first, then the regions it knows, then
// Regions) until a region answers, and keeps the answer. A region that cannot be
// reached is marked dead in f, so the call does not try it again. A 404, or an
// answer with no regions, is a lone region: the client then behaves as with one.
func (c *Client) learn(ctx context.Context, f *failover) {
	f.asked = true
	for _, base := range c.sources() {
		if f.dead[base] != nil {
			continue
		}
		v, err := c.fetchRegions(ctx, base)
		if ctx.Err() != nil {
			return
		}
		var e *Error
		switch {
		case err == nil:
			c.setView(v)
			return
		case errors.As(err, &e) && e.StatusCode == http.StatusNotFound:
			c.setView(dispatch.RegionsView{}) // a region that predates regions
			return
		case networkError(err):
			f.dead[base] = err
		}
		// Any other answer (say 503) says nothing of the deployment: ask the next.
	}
}

// sources lists where to ask for /v1/regions: BaseURL, the regions the client knows
// (those last seen up first) and the seeds.
func (c *Client) sources() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []string{c.BaseURL}
	add := func(u string) {
		if u = strings.TrimRight(u, "/"); u != "" && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	for _, rank := range []int{0, 1, 2} {
		for _, r := range c.view {
			if upRank(r.up) == rank {
				add(r.url)
			}
		}
	}
	for _, u := range c.Regions {
		add(u)
	}
	return out
}

func (c *Client) fetchRegions(ctx context.Context, base string) (dispatch.RegionsView, error) {
	var v dispatch.RegionsView
	ctx, cancel := context.WithTimeout(ctx, RegionsTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/regions", nil)
	if err != nil {
		return v, fmt.Errorf("GET /v1/regions: %w", err)
	}
	resp, err := c.httpClient().Do(req) // no token: any region answers anyone
	if err != nil {
		return v, fmt.Errorf("GET /v1/regions: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return v, responseError(resp)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&v); err != nil {
		return v, fmt.Errorf("decode /v1/regions: %w", err)
	}
	return v, nil
}

func (c *Client) setView(v dispatch.RegionsView) {
	rs := make([]region, 0, len(v.Regions))
	for _, r := range v.Regions {
		if u := strings.TrimRight(r.URL, "/"); u != "" {
			rs = append(rs, region{url: u, up: r.Up})
		}
	}
	c.mu.Lock()
	c.view, c.known = rs, true
	c.mu.Unlock()
}

// next picks the region a call that failed at from goes to: one it has not tried,
// preferring those /v1/regions last said are up, then those it did not know about,
// and starting after from in the deployment's order (where a successor usually
// follows the region it stands in for). Without a view it tries BaseURL and the
// seeds.
func (c *Client) next(f *failover, from string) (string, bool) {
	c.mu.Lock()
	view := slices.Clone(c.view)
	others := append([]string{c.BaseURL}, c.Regions...)
	c.mu.Unlock()
	if i := slices.IndexFunc(view, func(r region) bool { return r.url == from }); i >= 0 {
		view = append(view[i+1:], view[:i+1]...)
	}
	best, rank := "", 3
	for _, r := range view {
		if !f.tried[r.url] && f.dead[r.url] == nil && upRank(r.up) < rank {
			best, rank = r.url, upRank(r.up)
		}
	}
	if best != "" {
		return best, true
	}
	for _, u := range others {
		if u = strings.TrimRight(u, "/"); u != "" && !f.tried[u] && f.dead[u] == nil {
			return u, true
		}
	}
	return "", false
}

// upRank orders regions for failover: up, unknown, down.
func upRank(up *bool) int {
	switch {
	case up == nil:
		return 1
	case *up:
		return 0
	default:
		return 2
	}
}

// networkError reports whether err is a failure to reach a region or to hear its
// whole answer (refused, reset, timed out), as opposed to an answer.
func networkError(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue) || errors.Is(err, io.ErrUnexpectedEOF)
}

// notFound reports whether err is a 404 answer: this region has no such ride.
func notFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusNotFound
}
