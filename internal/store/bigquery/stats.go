package bigquery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/bigquery"
	"google.golang.org/api/iterator"

	"github.com/skyjoin/skyjoin/internal/store"
)

var _ store.Aggregator = (*Reader)(nil)

// Stats groups the records matching q's filters (deduplicated as the view
// is, the filters applied as Reader.from says) by country, city, property value or time bucket, in one parameterised query.
func (r *Reader) Stats(ctx context.Context, q store.StatsQuery) ([]store.StatsRow, error) {
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("bigquery: stats: %w", err)
	}
	var params []bigquery.QueryParameter
	param := func(name string, v any) {
		params = append(params, bigquery.QueryParameter{Name: name, Value: v})
	}
	pre, where := filterConds(&q.Query, param)
	var k1, k2, order string
	switch q.GroupBy {
	case store.GroupByCountry:
		k1, k2, order = "location_country", "''", "g.n DESC, g.k1, g.k2"
	case store.GroupByCity:
		k1, k2, order = "location_country", "location_city", "g.n DESC, g.k1, g.k2"
	case store.GroupByProp:
		// The value as text (store.PropText): JSON_VALUE gives a string's
		// or a boolean's text and NULL for null, objects and arrays; a
		// number goes by its value (store.NumberText): whole numbers below
		// 10^15 as integers, others as BigQuery writes a FLOAT64. k2 marks
		// the group without a value, so that the groups join on equality.
		// The path and the type name are parameters, as every value of a
		// query is.
		param("group_path", store.PropJSONPath(q.Prop))
		param("group_tn", "number")
		f := "LAX_FLOAT64(JSON_QUERY(properties, @group_path))"
		v := "IF(JSON_TYPE(JSON_QUERY(properties, @group_path)) = @group_tn, IF(" + f + " = TRUNC(" + f + ") AND ABS(" + f + ") < 1e15, " +
			"CAST(CAST(" + f + " AS INT64) AS STRING), CAST(" + f + " AS STRING)), JSON_VALUE(properties, @group_path))"
		param("no_value", "-")
		k1, k2, order = "COALESCE("+v+", '')", "IF("+v+" IS NULL, @no_value, '')", "g.n DESC, g.k1, g.k2"
	case store.GroupByTime:
		// The start of the epoch-aligned bucket in microseconds, exact in
		// integers (also before 1970).
		param("bucket_us", q.Bucket.Microseconds())
		k1 = "UNIX_MICROS(occurred_at) - MOD(MOD(UNIX_MICROS(occurred_at), @bucket_us) + @bucket_us, @bucket_us)"
		k2, order = "''", "g.k1"
	}
	limit := ""
	if q.MaxGroups > 0 {
		// The largest groups, in the answer's order.
		param("max_groups", int64(q.MaxGroups))
		limit = "\n  ORDER BY n DESC, k1, k2 LIMIT @max_groups"
	}
	sql := `WITH f AS (
  SELECT ` + k1 + ` AS k1, ` + k2 + ` AS k2, weather_temperature_c AS t, weather_condition AS cond
 ` + r.from(pre) + whereClause(where) + `
), g AS (
  SELECT k1, k2, COUNT(*) AS n, COUNT(t) AS nw, AVG(t) AS avg_t, MIN(t) AS min_t, MAX(t) AS max_t
  FROM f GROUP BY k1, k2` + limit + `
), c AS (
  SELECT k1, k2, cond, COUNT(*) AS cn FROM f WHERE t IS NOT NULL GROUP BY k1, k2, cond
)
SELECT g.k1, g.k2, g.n, g.nw, g.avg_t, g.min_t, g.max_t, c.cond, c.cn
FROM g LEFT JOIN c ON g.k1 = c.k1 AND g.k2 = c.k2
ORDER BY ` + order + `, c.cn DESC, c.cond`
	it, err := r.read(ctx, sql, params)
	if err != nil {
		return nil, fmt.Errorf("bigquery: stats by %s: %w", q.GroupBy, err)
	}
	var (
		out            []store.StatsRow
		lastK1, lastK2 bigquery.Value
	)
	for {
		var v []bigquery.Value
		err := it.Next(&v)
		if errors.Is(err, iterator.Done) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("bigquery: stats by %s: read rows: %w", q.GroupBy, err)
		}
		if len(v) != 9 {
			return nil, fmt.Errorf("bigquery: stats by %s: %d columns, want 9", q.GroupBy, len(v))
		}
		n, _ := v[2].(int64)
		nw, _ := v[3].(int64)
		if len(out) == 0 || v[0] != lastK1 || v[1] != lastK2 {
			lastK1, lastK2 = v[0], v[1]
			row := store.StatsRow{Count: n, WithWeather: nw, AvgTemp: float(v[4]), MinTemp: float(v[5]), MaxTemp: float(v[6])}
			k1s, _ := v[0].(string)
			switch q.GroupBy {
			case store.GroupByCountry:
				row.Key = k1s
			case store.GroupByCity:
				row.Country = k1s
				row.Key, _ = v[1].(string)
			case store.GroupByProp:
				row.Key = k1s
				k2s, _ := v[1].(string)
				row.NoValue = k2s != ""
			case store.GroupByTime:
				us, ok := v[0].(int64)
				if !ok {
					return nil, fmt.Errorf("bigquery: stats by time: bucket is %T, want int64", v[0])
				}
				row.Bucket = time.UnixMicro(us).UTC()
				row.Key = row.Bucket.Format(time.RFC3339)
			}
			out = append(out, row)
		}
		cond, ok1 := v[7].(string)
		cn, ok2 := v[8].(int64)
		if ok1 && ok2 && nw > 0 {
			row := &out[len(out)-1]
			if row.Conditions == nil {
				row.Conditions = make(map[string]float64)
			}
			row.Conditions[cond] = float64(cn) / float64(nw)
		}
	}
}

func float(v bigquery.Value) *float64 {
	f, ok := v.(float64)
	if !ok {
		return nil
	}
	return &f
}
