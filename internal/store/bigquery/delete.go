package bigquery

import (
	"context"
	"errors"
	"fmt"

	"cloud.google.com/go/bigquery"
	"google.golang.org/api/iterator"

	"github.com/skyjoin/skyjoin/internal/platform/iam"
)

// deleteUsersSQL erases users' records from the table itself (not the
// view): every stored copy of them. The ids travel as an array parameter.
func (c Config) deleteUsersSQL() string {
	return "DELETE FROM " + c.tableSQLName() + " WHERE user_id IN UNNEST(@user_ids)"
}

// EraserGrants are the IAM grants of a process that erases users: a DML
// DELETE is a query job (roles/bigquery.jobUser on the project) that
// changes the table (roles/bigquery.dataEditor on the dataset).
var EraserGrants = []iam.Grant{
	{Role: "roles/bigquery.dataEditor", On: iam.Dataset},
	{Role: "roles/bigquery.jobUser", On: iam.Project},
}

// DeleteUsers deletes every copy of the users' records from the table by
// DML (store.Eraser) and returns the rows BigQuery says it deleted. The
// rows stay in the table's time travel window (2 to 7 days, the dataset's
// max_time_travel_hours) and fail-safe (7 more days) at Google: see
// docs/data.md.
func (r *Reader) DeleteUsers(ctx context.Context, userIDs []string) (int64, error) {
	if len(userIDs) == 0 {
		return 0, nil
	}
	q := r.client.Query(r.cfg.deleteUsersSQL())
	q.Parameters = []bigquery.QueryParameter{{Name: "user_ids", Value: userIDs}}
	q.Location = r.cfg.Location
	fail := func(err error) (int64, error) {
		return 0, fmt.Errorf("bigquery: delete the records of %d user ids: %w", len(userIDs), err)
	}
	it, err := q.Read(ctx) // runs the statement to completion
	if err != nil {
		return fail(err)
	}
	var row []bigquery.Value
	if err := it.Next(&row); err != nil && !errors.Is(err, iterator.Done) {
		return fail(err)
	}
	job := it.SourceJob()
	if job == nil {
		return fail(errors.New("no job to read the number of deleted rows from"))
	}
	st, err := job.Status(ctx)
	if err != nil {
		return fail(fmt.Errorf("job status: %w", err))
	}
	if err := st.Err(); err != nil {
		return fail(err)
	}
	qs, ok := st.Statistics.Details.(*bigquery.QueryStatistics)
	if !ok {
		return fail(fmt.Errorf("job statistics %T: not a query's", st.Statistics.Details))
	}
	return qs.NumDMLAffectedRows, nil
}
