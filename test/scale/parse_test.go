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

func TestSNMPValue(t *testing.T) {
	snmp := strings.Join([]string{
		"Ip: Forwarding DefaultTTL",
		"Ip: 1 64",
		"Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors",
		"Udp: 100 2 7 90 5 0",
		"UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors",
		"UdpLite: 0 0 0 0 9 0",
	}, "\n")
	if v, err := snmpValue(snmp, "Udp", "RcvbufErrors"); err != nil || v != 5 {
		t.Errorf("Udp RcvbufErrors = %d, %v; want 5", v, err)
	}
	if _, err := snmpValue(snmp, "Tcp", "RetransSegs"); err == nil {
		t.Error("a missing protocol parsed")
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
