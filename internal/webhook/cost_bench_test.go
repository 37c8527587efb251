package webhook

import (
	"testing"

	"cel.dev/cel-go/cel"
)

// BenchmarkFilterCost: one evaluation on the largest record, for a cheap
// filter, one comprehension over the attributes, and a nested one as it
// ran before the bound (no runtime limit) and as it runs now (stopped at
// MaxFilterCost).
//
//	go test -run '^$' -bench FilterCost ./internal/webhook
func BenchmarkFilterCost(b *testing.B) {
	enc, err := encodeRecord(fullRecord())
	if err != nil {
		b.Fatal(err)
	}
	nested := `attributes.all(k, attributes.all(j, k == j || attributes[k] != attributes[j]))`
	for _, bc := range []struct {
		name, src string
		limit     bool
	}{
		{"cheap", `location.country == "Spain" && weather.temperature_c > 30`, true},
		{"one-comprehension", `attributes.exists(k, k.startsWith("utm_"))`, true},
		{"nested-unbounded", nested, false},
		{"nested-limited", nested, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f, err := compileFilter(bc.src)
			if err != nil {
				b.Fatal(err)
			}
			if !bc.limit {
				ast, _ := celEnv.Compile(bc.src)
				if f.prg, err = celEnv.Program(ast, cel.EvalOptions(cel.OptOptimize)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				f.prg.Eval(enc.vars)
			}
		})
	}
}
