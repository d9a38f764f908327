package main

import "testing"

// A run that met the fast speed, then the slow one, then fast again, in
// the format perf stat -I 250 -x , prints (counts from a run on this
// machine, rearranged; the last interval cut short).
const perfSample = `# started on Sun Nov 22 09:26:07 2026

     0.250317649,2028740073,,instructions,249760292,100.00,1.93,insn per cycle
     0.250317649,1048663789,,cycles,249760292,100.00,,
     0.500722978,1016607314,,instructions,247829641,100.00,0.97,insn per cycle
     0.500722978,1048927302,,cycles,247829641,100.00,,
     0.751079417,1466110980,,instructions,249686632,100.00,1.42,insn per cycle
     0.751079417,1034695206,,cycles,249686632,100.00,,
     1.001424666,2035652786,,instructions,249405742,100.00,1.95,insn per cycle
     1.001424666,1046340032,,cycles,249405742,100.00,,
     1.061239224,167810167,,instructions,57529744,100.00,0.70,insn per cycle
     1.061239224,240749198,,cycles,57529744,100.00,,
`

func TestParsePerf(t *testing.T) {
	c := parsePerf(perfSample)
	if c.Instructions != 2028740073+1016607314+1466110980+2035652786+167810167 {
		t.Errorf("instructions = %.0f, want the sum of the intervals", c.Instructions)
	}
	if c.Cycles != 1048663789+1048927302+1034695206+1046340032+240749198 {
		t.Errorf("cycles = %.0f, want the sum of the intervals", c.Cycles)
	}
	// The short last interval (0.70) is left out of the span.
	if c.IPCMin < 0.96 || c.IPCMin > 0.98 || c.IPCMax < 1.94 || c.IPCMax > 1.96 {
		t.Errorf("IPC span %.2f-%.2f, want 0.97-1.95", c.IPCMin, c.IPCMax)
	}
}

func TestPhases(t *testing.T) {
	fast := &runRecord{Target: "a", Valid: true, IPCMin: 1.90, IPCMax: 1.95}
	slow := &runRecord{Target: "a", Valid: true, IPCMin: 0.95, IPCMax: 1.00}
	mixed := &runRecord{Target: "a", Valid: true, IPCMin: 0.97, IPCMax: 1.94}
	old := &runRecord{Target: "a", Valid: true, InstrPerReq: 50000, CyclesPerReq: 26000} // stored before intervals
	phase := phases([]*runRecord{fast, slow, mixed, old})
	for _, tc := range []struct {
		r    *runRecord
		want int
	}{{fast, phaseFast}, {slow, phaseSlow}, {mixed, phaseMixed}, {old, phaseFast}} {
		if got := phase(tc.r); got != tc.want {
			t.Errorf("IPC %.2f-%.2f: phase %d, want %d", tc.r.IPCMin, tc.r.IPCMax, got, tc.want)
		}
	}
}
