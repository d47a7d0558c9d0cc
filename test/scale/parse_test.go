package scale

import (
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// utime 250 and stime 50 ticks; the command name holds a space and
	// a parenthesis.
	stat := "4242 (mpsa (x) d) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 0 0"
	got, err := parseStatCPU(stat)
	if err != nil || got != 3*time.Second {
		t.Errorf("parseStatCPU = %v, %v; want 3s", got, err)
	}
	if _, err := parseStatCPU("4242 (short) S 1"); err == nil {
		t.Error("a short stat line parsed")
	}
}

func TestParseStatusKiB(t *testing.T) {
	status := "Name:\tmpsad\nVmPeak:\t  900 kB\nVmHWM:\t   24512 kB\nVmRSS:\t 20000 kB\n"
	if got, err := parseStatusKiB(status, "VmHWM"); err != nil || got != 24512 {
		t.Errorf("VmHWM = %d, %v", got, err)
	}
	if _, err := parseStatusKiB(status, "VmSwap"); err == nil {
		t.Error("a missing key parsed")
	}
}

func TestUDPDrops(t *testing.T) {
	table := strings.Join([]string{
		"   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops",
		"  100: 00000000:1195 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1001 2 0000000000000000 7",
		"  101: 00000000:1194 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1002 2 0000000000000000 30",
		"  102: 00000000:01F4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1003 2 0000000000000000 1",
		"  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops",
		"  200: 00000000000000000000000000000000:1195 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1004 2 0000000000000000 2",
	}, "\n")
	// 0x1195 is 4501, 0x1194 4500, 0x01F4 500.
	onPort, other, err := udpDrops(table, 4501)
	if err != nil || onPort != 9 || other != 31 {
		t.Errorf("udpDrops = %d, %d, %v; want 9 on the control port, 31 elsewhere", onPort, other, err)
	}
	if _, _, err := udpDrops("  1: 00000000 00000000:0000 07 0 0 0 0 0 0 1 2 0 x", 4501); err == nil {
		t.Error("a broken line parsed")
	}
}

func TestMetricValue(t *testing.T) {
	body := "# HELP x\nmpsa_put_retransmissions_total{group=\"other\"} 7\nmpsa_put_retransmissions_total{group=\"scale\"} 42\n"
	if v, err := metricValue(body, `mpsa_put_retransmissions_total{group="scale"}`); err != nil || v != 42 {
		t.Errorf("= %d, %v; want 42", v, err)
	}
	if _, err := metricValue(body, `mpsa_put_retransmissions_total{group="none"}`); err == nil {
		t.Error("a missing series parsed")
	}
}

func TestPollEvery(t *testing.T) {
	for _, c := range []struct{ elapsed, want time.Duration }{
		{0, 5 * time.Millisecond}, {time.Second, 50 * time.Millisecond}, {time.Minute, 100 * time.Millisecond},
	} {
		if got := pollEvery(c.elapsed); got != c.want {
			t.Errorf("pollEvery(%v) = %v, want %v", c.elapsed, got, c.want)
		}
	}
}
