package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Client talks to a daemon's status socket.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{path: path, hc: &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://mpsad"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("mpsad at %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("mpsad: %s", e.Error)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Status fetches the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodGet, "/status", &st)
	return st, err
}

// Rekey asks the controller to rekey group now and returns the new SPI.
func (c *Client) Rekey(ctx context.Context, group string) (string, error) {
	var r map[string]string
	if err := c.do(ctx, http.MethodPost, "/groups/"+url.PathEscape(group)+"/rekey", &r); err != nil {
		return "", err
	}
	return r["spi"], nil
}

// Routes fetches a group's routes (GET /groups/NAME/routes).
func (c *Client) Routes(ctx context.Context, group string) (Routes, error) {
	var r Routes
	err := c.do(ctx, http.MethodGet, "/groups/"+url.PathEscape(group)+"/routes", &r)
	return r, err
}
