// e2e-workload produces, on a real Temporal server, workflow runs in every status the
// end-to-end tests compare: completed, failed, canceled, terminated, timed out,
// continued-as-new and still running, each with a memo and, when asked, custom search
// attributes. It runs its own worker for the kinds that need one, waits until every
// run that should close has closed, and prints the expected number of runs per status
// as one JSON object on stdout.
//
//	e2e-workload --address 127.0.0.1:7233 --namespace orders --prefix w1 --count 5 \
//	    [--search-attributes] [--typed-attributes]
//
// --typed-attributes adds the values where store fidelity breaks first: Double
// attributes whose shortest text needs 17 significant digits, Datetime attributes with
// nanoseconds and KeywordList attributes, set at start and upserted again (with a memo
// upsert) by every run a worker executes.
//
// Workflow ids are <prefix>-<kind>-<i>. Running and timed-out runs use a task queue
// no worker polls, so they stay running or time out on the server's own timer.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// The custom search attributes the tests register (temporal operator search-attribute create).
var (
	keywordKey = temporal.NewSearchAttributeKeyKeyword("E2eKeyword")
	intKey     = temporal.NewSearchAttributeKeyInt64("E2eInt")
	// Registered only when the workload runs with --typed-attributes.
	doubleKey      = temporal.NewSearchAttributeKeyFloat64("E2eDouble")
	datetimeKey    = temporal.NewSearchAttributeKeyTime("E2eDatetime")
	keywordListKey = temporal.NewSearchAttributeKeyKeywordList("E2eKeywordList")
)

// Doubles whose exact text a float parser that is not correctly rounded gets wrong: the
// 17-significant-digit neighbours of round numbers, and the smallest subnormal. Each fits
// Temporal's SQL column (DECIMAL(20,5)) and Elasticsearch's scaled_float mapping.
var doubles = []float64{0.42000000000000004, 123456789012345.67, 5e-324, 0.30000000000000004, -2.5e-3}

// typedValues are the Double, Datetime and KeywordList values of run i; `upserted` picks
// the set a running workflow upserts (the start values differ from them, so a store that
// kept the start values shows). Datetimes carry nanoseconds that are not all zero.
func typedValues(i int, prefix, kind string, upserted bool) []temporal.SearchAttributeUpdate {
	shift := 0
	if upserted {
		shift = 1
	}
	d := doubles[(i+shift)%len(doubles)]
	t := time.Date(2024, 5, 1, 10, 0, 1+i, 123456900+shift*89, time.UTC)
	list := []string{prefix + "-" + kind, fmt.Sprintf("n%d", i)}
	if upserted {
		list = append(list, "upserted")
	}
	return []temporal.SearchAttributeUpdate{doubleKey.ValueSet(d), datetimeKey.ValueSet(t), keywordListKey.ValueSet(list)}
}

// input is every workflow's argument.
type input struct {
	N      int    // the run's number within its kind
	Left   int    // continueWorkflow: continue-as-new this many more times
	Typed  bool   // upsert typed search attributes and the memo
	Prefix string // the workload's prefix, for the upserted values
	Kind   string
}

// upsertTyped upserts the typed search attributes and a memo field, as a workflow that
// records its progress does.
func upsertTyped(ctx workflow.Context, in input) error {
	if !in.Typed {
		return nil
	}
	if err := workflow.UpsertTypedSearchAttributes(ctx, typedValues(in.N, in.Prefix, in.Kind, true)...); err != nil {
		return err
	}
	return workflow.UpsertMemo(ctx, map[string]interface{}{
		"upserted": true,
		"left":     in.Left,
		"ratio":    doubles[in.N%len(doubles)],
	})
}

func completeWorkflow(ctx workflow.Context, in input) (string, error) {
	if err := upsertTyped(ctx, in); err != nil {
		return "", err
	}
	return fmt.Sprintf("done %d", in.N), nil
}

func failWorkflow(ctx workflow.Context, in input) error {
	if err := upsertTyped(ctx, in); err != nil {
		return err
	}
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf("failed on purpose %d", in.N), "E2eFailure", nil)
}

// continueWorkflow continues as new `in.Left` times, then completes: Left+1 runs in all.
func continueWorkflow(ctx workflow.Context, in input) (string, error) {
	if err := upsertTyped(ctx, in); err != nil {
		return "", err
	}
	if in.Left > 0 {
		in.Left--
		return "", workflow.NewContinueAsNewError(ctx, continueWorkflow, in)
	}
	return "chain done", nil
}

// waitWorkflow waits (for an hour) until it is canceled.
func waitWorkflow(ctx workflow.Context, in input) error {
	if err := upsertTyped(ctx, in); err != nil {
		return err
	}
	return workflow.Sleep(ctx, time.Hour)
}

type kind struct {
	name     string
	idle     bool     // started on the task queue no worker polls
	statuses []string // the statuses its runs end in
}

var kinds = []kind{
	{name: "completed", statuses: []string{"Completed"}},
	{name: "failed", statuses: []string{"Failed"}},
	{name: "canceled", statuses: []string{"Canceled"}},
	{name: "continued", statuses: []string{"ContinuedAsNew", "ContinuedAsNew", "Completed"}},
	{name: "terminated", idle: true, statuses: []string{"Terminated"}},
	{name: "timedout", idle: true, statuses: []string{"TimedOut"}},
	{name: "running", idle: true, statuses: []string{"Running"}},
}

func main() {
	address := flag.String("address", "127.0.0.1:7233", "frontend host:port")
	namespace := flag.String("namespace", "default", "namespace")
	prefix := flag.String("prefix", "w", "workflow id prefix (one per workload)")
	count := flag.Int("count", 3, "runs of each kind")
	withSA := flag.Bool("search-attributes", false, "set the custom search attributes E2eKeyword and E2eInt")
	typed := flag.Bool("typed-attributes", false, "also set and upsert E2eDouble, E2eDatetime and E2eKeywordList, and upsert the memo")
	flag.Parse()
	log.SetOutput(os.Stderr)
	log.SetPrefix("e2e-workload: ")

	c, err := dialWithRetry(*address, *namespace)
	if err != nil {
		log.Fatalf("connect %s namespace %s: %v", *address, *namespace, err)
	}
	defer c.Close()

	taskQueue := "e2e-" + *prefix
	idleQueue := "e2e-idle-" + *prefix
	w := worker.New(c, taskQueue, worker.Options{})
	w.RegisterWorkflowWithOptions(completeWorkflow, workflow.RegisterOptions{Name: "E2eComplete"})
	w.RegisterWorkflowWithOptions(failWorkflow, workflow.RegisterOptions{Name: "E2eFail"})
	w.RegisterWorkflowWithOptions(continueWorkflow, workflow.RegisterOptions{Name: "E2eContinue"})
	w.RegisterWorkflowWithOptions(waitWorkflow, workflow.RegisterOptions{Name: "E2eWait"})
	if err := w.Start(); err != nil {
		log.Fatalf("worker: %v", err)
	}
	defer w.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	expected := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, len(kinds)**count)
	sem := make(chan struct{}, 8)
	for _, k := range kinds {
		for i := 0; i < *count; i++ {
			for _, s := range k.statuses {
				expected[s]++
			}
			wg.Add(1)
			go func(k kind, i int) {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				if err := runOne(ctx, c, k, i, *prefix, taskQueue, idleQueue, *withSA, *typed); err != nil {
					errs <- fmt.Errorf("%s-%s-%d: %w", *prefix, k.name, i, err)
				}
			}(k, i)
		}
	}
	wg.Wait()
	close(errs)
	var all []string
	for err := range errs {
		all = append(all, err.Error())
	}
	if len(all) > 0 {
		log.Fatalf("%d runs did not end as planned:\n  %s", len(all), strings.Join(all, "\n  "))
	}
	out, _ := json.Marshal(expected)
	fmt.Println(string(out))
}

// dialWithRetry connects and waits until the namespace is known to the frontend (a new
// namespace reaches the frontend's cache within its refresh interval).
func dialWithRetry(address, namespace string) (client.Client, error) {
	deadline := time.Now().Add(90 * time.Second)
	for {
		c, err := client.Dial(client.Options{HostPort: address, Namespace: namespace,
			Logger: quietLogger{}})
		if err == nil {
			_, err = c.WorkflowService().DescribeNamespace(context.Background(),
				describeNamespace(namespace))
			if err == nil {
				return c, nil
			}
			c.Close()
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(time.Second)
	}
}

func runOne(ctx context.Context, c client.Client, k kind, i int, prefix, taskQueue, idleQueue string, withSA, typed bool) error {
	id := fmt.Sprintf("%s-%s-%d", prefix, k.name, i)
	opts := client.StartWorkflowOptions{
		ID:        id,
		TaskQueue: taskQueue,
		Memo: map[string]interface{}{
			"owner": "vismig-e2e",
			"batch": prefix,
			"kind":  k.name,
			"n":     i,
		},
	}
	if k.idle {
		opts.TaskQueue = idleQueue
	}
	var attributes []temporal.SearchAttributeUpdate
	if withSA {
		attributes = append(attributes, keywordKey.ValueSet(prefix+"-"+k.name), intKey.ValueSet(int64(i)))
	}
	if typed {
		attributes = append(attributes, typedValues(i, prefix, k.name, false)...)
	}
	if len(attributes) > 0 {
		opts.TypedSearchAttributes = temporal.NewSearchAttributes(attributes...)
	}
	in := input{N: i, Typed: typed, Prefix: prefix, Kind: k.name}
	var (
		run client.WorkflowRun
		err error
	)
	start := func(wf string, args ...interface{}) error {
		for attempt := 0; ; attempt++ {
			run, err = c.ExecuteWorkflow(ctx, opts, wf, args...)
			// A new namespace, or a search attribute just registered, reaches the
			// frontend's namespace cache within its refresh interval (10s).
			var nf *serviceerror.NamespaceNotFound
			var invalid *serviceerror.InvalidArgument
			retry := errors.As(err, &nf) ||
				(errors.As(err, &invalid) && strings.Contains(invalid.Error(), "search attribute"))
			if retry && attempt < 60 {
				time.Sleep(time.Second)
				continue
			}
			return err
		}
	}
	switch k.name {
	case "completed":
		if err := start("E2eComplete", in); err != nil {
			return err
		}
		return run.Get(ctx, nil)
	case "failed":
		if err := start("E2eFail", in); err != nil {
			return err
		}
		if err := run.Get(ctx, nil); err == nil {
			return errors.New("completed, expected to fail")
		}
		return nil
	case "continued":
		in.Left = 2
		if err := start("E2eContinue", in); err != nil {
			return err
		}
		return run.Get(ctx, nil)
	case "canceled":
		if err := start("E2eWait", in); err != nil {
			return err
		}
		// Cancel once the workflow task ran (its timer exists), so the run ends Canceled.
		time.Sleep(500 * time.Millisecond)
		if err := c.CancelWorkflow(ctx, id, run.GetRunID()); err != nil {
			return err
		}
		var canceled *temporal.CanceledError
		if err := run.Get(ctx, nil); !errors.As(err, &canceled) {
			return fmt.Errorf("expected canceled, got %v", err)
		}
		return nil
	case "terminated":
		if err := start("E2eComplete", in); err != nil {
			return err
		}
		return c.TerminateWorkflow(ctx, id, run.GetRunID(), "vismig e2e")
	case "timedout":
		opts.WorkflowExecutionTimeout = 2 * time.Second
		if err := start("E2eComplete", in); err != nil {
			return err
		}
		var timeout *temporal.TimeoutError
		if err := run.Get(ctx, nil); !errors.As(err, &timeout) {
			return fmt.Errorf("expected timed out, got %v", err)
		}
		return nil
	case "running":
		return start("E2eComplete", in)
	}
	return fmt.Errorf("unknown kind %s", k.name)
}
