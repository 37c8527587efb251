//go:build ignore

// genworld turns Natural Earth's 1:110m land polygons, as TopoJSON from the
// world-atlas npm package (public domain data), into web/assets/world.json:
// a list of rings, each a flat [lon, lat, lon, lat, ...] array rounded to
// 0.1 degree, for the dashboard's equirectangular map. Run it again only to
// change the map:
//
//	npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz
//	go run genworld.go package/land-110m.json > web/assets/world.json
package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
)

type topology struct {
	Transform struct {
		Scale     [2]float64 `json:"scale"`
		Translate [2]float64 `json:"translate"`
	} `json:"transform"`
	Arcs    [][][2]float64             `json:"arcs"`
	Objects map[string]json.RawMessage `json:"objects"`
}

type geometry struct {
	Type       string          `json:"type"`
	Arcs       json.RawMessage `json:"arcs"`
	Geometries []geometry      `json:"geometries"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "genworld:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: go run genworld.go land-110m.json > web/assets/world.json")
	}
	b, err := os.ReadFile(os.Args[1])
	if err != nil {
		return err
	}
	var t topology
	if err := json.Unmarshal(b, &t); err != nil {
		return fmt.Errorf("decode topojson: %w", err)
	}
	// Decode the delta-encoded, quantised arcs.
	arcs := make([][][2]float64, len(t.Arcs))
	for i, a := range t.Arcs {
		var x, y float64
		for _, p := range a {
			x += p[0]
			y += p[1]
			arcs[i] = append(arcs[i], [2]float64{x*t.Transform.Scale[0] + t.Transform.Translate[0], y*t.Transform.Scale[1] + t.Transform.Translate[1]})
		}
	}
	var g geometry
	if err := json.Unmarshal(t.Objects["land"], &g); err != nil {
		return fmt.Errorf("decode land: %w", err)
	}
	var rings [][]float64
	var walk func(g geometry) error
	walk = func(g geometry) error {
		switch g.Type {
		case "GeometryCollection":
			for _, c := range g.Geometries {
				if err := walk(c); err != nil {
					return err
				}
			}
		case "Polygon":
			var p [][]int
			if err := json.Unmarshal(g.Arcs, &p); err != nil {
				return err
			}
			for _, r := range p {
				rings = append(rings, ring(arcs, r))
			}
		case "MultiPolygon":
			var mp [][][]int
			if err := json.Unmarshal(g.Arcs, &mp); err != nil {
				return err
			}
			for _, p := range mp {
				for _, r := range p {
					rings = append(rings, ring(arcs, r))
				}
			}
		default:
			return fmt.Errorf("unexpected geometry %q", g.Type)
		}
		return nil
	}
	if err := walk(g); err != nil {
		return err
	}
	out := struct {
		Source string      `json:"source"`
		Rings  [][]float64 `json:"rings"`
	}{"Natural Earth 1:110m land (public domain), via world-atlas 2.0.2; rounded to 0.1 degree", nil}
	for _, r := range rings {
		if len(r) >= 8 { // at least 4 points
			out.Rings = append(out.Rings, unwrap(r)...)
		}
	}
	enc := json.NewEncoder(os.Stdout)
	return enc.Encode(out)
}

// unwrap fixes a ring that crosses the antimeridian (Fiji, Chukotka), which
// an equirectangular map would fill as a band across the world: it makes
// the longitudes continuous and returns the ring and its copy shifted by
// 360 degrees, each partly off the map (the canvas clips them). A ring
// around a pole (Antarctica) is left as it is.
func unwrap(r []float64) [][]float64 {
	out := append([]float64(nil), r...)
	shift, crossed := 0.0, false
	for i := 2; i < len(r); i += 2 {
		switch d := r[i] - r[i-2]; {
		case d > 180:
			shift -= 360
			crossed = true
		case d < -180:
			shift += 360
			crossed = true
		}
		out[i] = r[i] + shift
	}
	if !crossed || shift != 0 {
		return [][]float64{r}
	}
	maxLon := out[0]
	for i := 0; i < len(out); i += 2 {
		maxLon = math.Max(maxLon, out[i])
	}
	delta := 360.0
	if maxLon > 180 {
		delta = -360
	}
	copyR := append([]float64(nil), out...)
	for i := 0; i < len(copyR); i += 2 {
		copyR[i] = math.Round((copyR[i]+delta)*10) / 10
	}
	return [][]float64{out, copyR}
}

// ring joins the arcs of one ring into a flat lon/lat array, dropping
// points that round to the previous one.
func ring(arcs [][][2]float64, idx []int) []float64 {
	var pts [][2]float64
	for k, i := range idx {
		var a [][2]float64
		if i >= 0 {
			a = arcs[i]
		} else {
			src := arcs[^i]
			for j := len(src) - 1; j >= 0; j-- {
				a = append(a, src[j])
			}
		}
		if k > 0 && len(a) > 0 {
			a = a[1:]
		}
		pts = append(pts, a...)
	}
	var flat []float64
	var lx, ly float64 = math.NaN(), math.NaN()
	for _, p := range pts {
		x, y := math.Round(p[0]*10)/10, math.Round(p[1]*10)/10
		if x == lx && y == ly {
			continue
		}
		flat = append(flat, x, y)
		lx, ly = x, y
	}
	return flat
}
