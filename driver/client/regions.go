package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/gorilla/websocket"

	"github.com/understudy/understudy/dispatch"
)

// FailoverAfter is how many dials in a row that do not reach the current region (no
// HTTP answer: refused, reset, timed out) a reconnecting client makes before it dials
// another region of the deployment.
const FailoverAfter = 2

// region is one region of the deployment as GET /v1/regions last told the client.
type region struct {
	name string
	url  string // its driver socket URL
	up   *bool  // nil: the answering region did not know
	// areas are the areas this region is home of or served when last seen; their
	// rides are where this region's drivers' rides are.
	areas []string
}

// successorWait bounds how long a client whose region is lost waits for another
// region to take the lost region's areas (their rides, its driver's among them)
// before it dials any region that is up.
const successorWait = 20 * time.Second

// learn asks for GET /v1/regions (the current region first, then the regions the
// client knows, up ones first, then Dialer.Regions and the URL given to Dial) until
// a region answers, and keeps the answer. Regions it cannot reach are added to dead.
// A 404 is a lone region that predates regions.
func (c *Client) learn(ctx context.Context, dead map[string]bool) {
	for _, u := range c.sources() {
		if dead[u] {
			continue
		}
		v, status, err := c.fetchRegions(ctx, u)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			dead[u] = true
		case status == http.StatusOK:
			c.setView(v)
			return
		case status == http.StatusNotFound:
			c.setView(dispatch.RegionsView{})
			return
		}
		// Any other answer (say 503) says nothing of the deployment: ask the next.
	}
}

// learned reports whether some region has answered GET /v1/regions.
func (c *Client) learned() bool {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	return c.known
}

// sources lists the socket URLs of the regions to ask for /v1/regions, each once.
func (c *Client) sources() []string {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	var out []string
	add := func(u string) {
		if u, ok := socketURL(u); ok && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	add(c.url)
	for _, rank := range []int{0, 1, 2} {
		for _, r := range c.view {
			if upRank(r.up) == rank {
				add(r.url)
			}
		}
	}
	for _, u := range c.d.Regions {
		add(u)
	}
	add(c.first)
	return out
}

// fetchRegions GETs /v1/regions from the region whose socket URL is socket and
// returns the answer's status and, for a 200, the view. err is a failure to reach
// the region.
func (c *Client) fetchRegions(ctx context.Context, socket string) (dispatch.RegionsView, int, error) {
	var v dispatch.RegionsView
	u, err := url.Parse(socket)
	if err != nil {
		return v, 0, nil // not a URL: nothing to learn there, nothing dead
	}
	u.Scheme = map[string]string{"ws": "http", "wss": "https"}[u.Scheme]
	u.Path, u.RawQuery = "/v1/regions", ""
	ctx, cancel := context.WithTimeout(ctx, c.d.HandshakeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return v, 0, nil
	}
	req.Close = true // rare: keep no idle connection behind
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return v, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&v) != nil {
		return v, 0, nil // garbled: as if it had not answered this
	}
	return v, resp.StatusCode, nil
}

func (c *Client) setView(v dispatch.RegionsView) {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	old := map[string][]string{}
	for _, r := range c.view {
		old[r.name] = r.areas
	}
	rs := make([]region, 0, len(v.Regions))
	for _, r := range v.Regions {
		u, ok := socketURL(r.URL)
		if !ok {
			continue
		}
		reg := region{name: r.Name, url: u, up: r.Up}
		for _, a := range v.Areas {
			if a.Home == r.Name || (a.ServedBy != nil && *a.ServedBy == r.Name) || slices.Contains(old[r.Name], a.Name) {
				if !slices.Contains(reg.areas, a.Name) {
					reg.areas = append(reg.areas, a.Name)
				}
			}
		}
		rs = append(rs, reg)
	}
	c.view, c.known, c.areas = rs, true, v.Areas
}

// successor returns the socket URL of the region that serves now an area the region
// at socket URL cur was home of or served, if /v1/regions last said one does.
func (c *Client) successor(cur string) (string, bool) {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	i := slices.IndexFunc(c.view, func(r region) bool { return r.url == cur })
	if i < 0 {
		return "", false
	}
	lost := c.view[i]
	for _, a := range c.areas {
		if !slices.Contains(lost.areas, a.Name) || a.ServedBy == nil || *a.ServedBy == lost.name {
			continue
		}
		for _, r := range c.view {
			if r.name == *a.ServedBy {
				return r.url, true
			}
		}
	}
	return "", false
}

// pick chooses the region to dial instead of the current one: not in dead,
// preferring those /v1/regions last said are up, then those it did not know about,
// and starting after the current one in the deployment's order (where a successor
// usually follows the region it stands in for); then Dialer.Regions and the URL given
// to Dial.
func (c *Client) pick(dead map[string]bool) (string, bool) {
	c.connMu.Lock()
	cur, _ := socketURL(c.url)
	view := slices.Clone(c.view)
	others := append(slices.Clone(c.d.Regions), c.first)
	c.connMu.Unlock()
	if i := slices.IndexFunc(view, func(r region) bool { return r.url == cur }); i >= 0 {
		view = append(view[i+1:], view[:i+1]...)
	}
	best, rank := "", 3
	for _, r := range view {
		if r.url != cur && !dead[r.url] && upRank(r.up) < rank {
			best, rank = r.url, upRank(r.up)
		}
	}
	if best != "" {
		return best, true
	}
	for _, u := range others {
		if u, ok := socketURL(u); ok && u != cur && !dead[u] {
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

// unreached reports whether a dial error is a failure to reach the server at all, as
// opposed to a handshake it refused.
func unreached(err error) bool {
	var he *HandshakeError
	return err != nil && !errors.As(err, &he) && !errors.Is(err, websocket.ErrBadHandshake)
}

// dialElsewhere dials the deployment's other regions in turn, each once, after the
// first dial could not reach c.url (err).
func (c *Client) dialElsewhere(ctx context.Context, err error) (*websocket.Conn, error) {
	cur, _ := socketURL(c.url)
	dead := map[string]bool{cur: true}
	c.learn(ctx, dead)
	for {
		next, ok := c.pick(dead)
		if !ok {
			return nil, err
		}
		c.setURL(next)
		ws, derr := c.dial(ctx)
		if derr == nil {
			return ws, nil
		}
		if ctx.Err() != nil || !retryable(derr) {
			return nil, derr // a refused token is refused everywhere
		}
		dead[next] = true
	}
}

// failover points the client at another region after FailoverAfter dials in a row
// could not reach the current one; dead collects the regions of this outage and is
// cleared once every region has failed, to go round again.
func (c *Client) failover(dead map[string]bool) bool {
	cur, _ := socketURL(c.URL())
	dead[cur] = true
	// The region that takes the lost one's areas has the driver's ride: wait (a
	// while) for it to be named, and go there.
	for start := time.Now(); ; {
		c.learn(c.ctx, maps.Clone(dead))
		if next, ok := c.successor(cur); ok && next != cur {
			c.setURL(next)
			return true
		}
		if time.Since(start) > successorWait || !c.hasAreas(cur) {
			break
		}
		select {
		case <-c.ctx.Done():
			return false
		case <-time.After(500 * time.Millisecond):
		}
	}
	c.learn(c.ctx, dead)
	next, ok := c.pick(dead)
	if !ok {
		clear(dead)
		dead[cur] = true
		if next, ok = c.pick(dead); !ok {
			return false
		}
	}
	c.setURL(next)
	return true
}

// hasAreas reports whether the region at socket URL cur had areas, as last seen.
func (c *Client) hasAreas(cur string) bool {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	i := slices.IndexFunc(c.view, func(r region) bool { return r.url == cur })
	return i >= 0 && len(c.view[i].areas) > 0
}

func (c *Client) setURL(u string) {
	c.connMu.Lock()
	c.url = u
	c.connMu.Unlock()
}
