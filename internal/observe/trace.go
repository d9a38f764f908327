package observe

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/proxy"
)

// Tracer makes OpenTelemetry spans for requests: a server span per
// request, continuing the client's W3C trace context, and a client span
// per upstream try, whose context goes upstream. A Tracer that is nil
// makes none, and costs nothing.
type Tracer struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	trusted  []netip.Prefix
	prop     propagation.TraceContext
}

// trustedKey marks a span whose remote parent came from a trusted client:
// only then does the parent's sampled flag decide.
const trustedKey = attribute.Key("strait.trusted_parent")

// NewTracer returns the tracer t configures, exporting in batches over
// OTLP, or nil if tracing is off. Export errors go to logger, at most one
// a minute (with how many there were).
func NewTracer(t *config.Tracing, logger *slog.Logger) (*Tracer, error) {
	if t.Exporter == "" {
		return nil, nil
	}
	otel.SetErrorHandler(&exportErrors{logger: logger})
	var client otlptrace.Client
	switch t.Exporter {
	case "otlp_grpc":
		client = otlptracegrpc.NewClient(otlptracegrpc.WithEndpoint(cmp.Or(t.Endpoint, "127.0.0.1:4317")), otlptracegrpc.WithInsecure())
	case "otlp_http":
		client = otlptracehttp.NewClient(otlptracehttp.WithEndpoint(cmp.Or(t.Endpoint, "127.0.0.1:4318")), otlptracehttp.WithInsecure())
	default:
		return nil, fmt.Errorf("tracing: unknown exporter %q", t.Exporter)
	}
	// New does not connect: a collector that is down loses spans, and
	// strait serves on.
	exp, err := otlptrace.New(context.Background(), client)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	return newTracer(t, sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second)))
}

// newTracer returns the tracer t configures, its spans going to export.
func newTracer(t *config.Tracing, export sdktrace.TracerProviderOption) (*Tracer, error) {
	ratio := 1.0
	if t.Sampling.Set {
		ratio = t.Sampling.Value
	}
	res := resource.NewSchemaless(attribute.String("service.name", cmp.Or(t.ServiceName, "strait")))
	tr := &Tracer{}
	for _, s := range t.TrustedParents {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("tracing: trusted_parents: %w", err)
		}
		tr.trusted = append(tr.trusted, p)
	}
	tr.provider = sdktrace.NewTracerProvider(
		export,
		sdktrace.WithSampler(sampler{sdktrace.TraceIDRatioBased(ratio), ratio}),
		sdktrace.WithResource(res),
		// What a client sends (a path, a Host) goes into attributes: bound
		// them, so that its spans cannot swell an export past what a
		// collector takes.
		sdktrace.WithRawSpanLimits(spanLimits()))
	tr.tracer = tr.provider.Tracer("github.com/straitproxy/strait")
	return tr, nil
}

// spanLimits are the SDK's defaults, with attribute values cut at 512
// bytes.
func spanLimits() sdktrace.SpanLimits {
	l := sdktrace.NewSpanLimits()
	l.AttributeValueLengthLimit = 512
	return l
}

// spanMethod is the method as spans name it: a standard one, or _OTHER (a
// client must not make span names of its own: tracing backends index
// them).
func spanMethod(m string) string {
	switch m {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH":
		return m
	}
	return "_OTHER"
}

// Shutdown exports what is left and stops.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// sampler follows a local parent, and a remote one from a trusted
// client; other spans are sampled at the ratio, whatever a client's
// traceparent says (a client must not make strait trace all it sends).
type sampler struct {
	ratio sdktrace.Sampler
	share float64 // the ratio's
}

func (s sampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	psc := trace.SpanContextFromContext(p.ParentContext)
	follow := psc.IsValid() && !psc.IsRemote()
	for _, a := range p.Attributes {
		if a.Key == trustedKey && a.Value.AsBool() {
			follow = psc.IsValid()
		}
	}
	if !follow && psc.IsValid() {
		// An untrusted client chose this trace id, and a ratio sampler
		// decides by the id (one ending in zeros is always sampled): a
		// draw of strait's own decides.
		d := sdktrace.Drop
		if rand.Float64() < s.share {
			d = sdktrace.RecordAndSample
		}
		return sdktrace.SamplingResult{Decision: d, Tracestate: psc.TraceState()}
	}
	if !follow {
		return s.ratio.ShouldSample(p) // a trace strait starts: its id is strait's
	}
	d := sdktrace.Drop
	if psc.IsSampled() {
		d = sdktrace.RecordAndSample
	}
	return sdktrace.SamplingResult{Decision: d, Tracestate: psc.TraceState()}
}

func (s sampler) Description() string {
	return "strait: trusted parents, else " + s.ratio.Description()
}

// Span is the spans of one request.
type Span struct {
	t      *Tracer
	ctx    context.Context
	server trace.Span
	client trace.Span // the current try's; nil if none
}

// fields is a propagation.TextMapCarrier over a request's header.
type fields struct{ h *header.Header }

func (f fields) Get(key string) string { return string(f.h.Get(key)) }
func (f fields) Set(key, value string) { f.h.Set(key, value) }
func (f fields) Keys() []string {
	keys := make([]string, f.h.Len())
	for i := range keys {
		keys[i] = string(f.h.Field(i).Name)
	}
	return keys
}

// Start starts the server span of the request of s, received on listener,
// as a child of the trace context the request carries.
func (t *Tracer) Start(s *proxy.Session, listener string) *Span {
	ctx := t.prop.Extract(context.Background(), fields{&s.Request.Header})
	trusted := false
	if trace.SpanContextFromContext(ctx).IsValid() {
		a := s.ClientAddr.Addr().Unmap()
		for _, p := range t.trusted {
			trusted = trusted || p.Contains(a)
		}
	}
	method := spanMethod(s.Request.Method)
	name := method
	if method == "_OTHER" {
		name = "HTTP"
	}
	ctx, span := t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(s.Stats.Start),
		trace.WithAttributes(
			trustedKey.Bool(trusted),
			attribute.String("http.request.method", method),
			attribute.String("url.path", pathOf(s.Request.Path)),
			attribute.String("server.address", string(s.Request.Authority)),
			attribute.String("client.address", s.ClientAddr.Addr().String()),
			attribute.String("strait.listener", listener),
			attribute.String("strait.request_id", string(s.RequestID))))
	return &Span{t: t, ctx: ctx, server: span}
}

func pathOf(target []byte) string {
	for i, c := range target {
		if c == '?' {
			return string(target[:i])
		}
	}
	return string(target)
}

// Routed records the route and cluster that took the request.
func (sp *Span) Routed(route, cluster string) {
	sp.server.SetAttributes(attribute.String("http.route", route), attribute.String("strait.cluster", cluster))
	sp.server.AddEvent("routed")
}

// Try starts the client span of a try at peer, ending the try before it
// (which failed).
func (sp *Span) Try(s *proxy.Session, peer string) {
	if sp.client != nil {
		sp.client.End()
	}
	_, sp.client = sp.t.tracer.Start(sp.ctx, "upstream "+spanMethod(s.Request.Method), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("server.address", peer),
			attribute.Int("strait.attempt", s.Stats.Attempts)))
}

// Inject writes the current try's trace context into the request it
// sends: whatever the client sent, the origin gets the context of the try.
func (sp *Span) Inject(req *proxy.Request) {
	req.Header.Del("traceparent")
	req.Header.Del("tracestate")
	if sp.client != nil {
		sp.t.prop.Inject(trace.ContextWithSpan(sp.ctx, sp.client), fields{&req.Header})
	}
}

// Failed records why the current try failed.
func (sp *Span) Failed(e *proxy.Error) {
	if sp.client == nil {
		return
	}
	sp.client.RecordError(e)
	sp.client.SetStatus(codes.Error, e.Where)
}

// Response records the response head's arrival.
func (sp *Span) Response(status int) {
	sp.server.AddEvent("response_head", trace.WithAttributes(attribute.Int("http.response.status_code", status)))
	if sp.client != nil {
		sp.client.SetAttributes(attribute.Int("http.response.status_code", status))
	}
}

// End ends the request's spans.
func (sp *Span) End(s *proxy.Session, e *proxy.Error) {
	end := trace.WithTimestamp(s.Stats.Start.Add(s.Stats.Total))
	if sp.client != nil {
		if e != nil && e.Side == proxy.Upstream {
			sp.Failed(e)
		}
		sp.client.End(end)
	}
	sp.server.SetAttributes(attribute.Int("http.response.status_code", s.Stats.Status),
		attribute.Int("strait.attempts", s.Stats.Attempts))
	if e != nil {
		sp.server.SetAttributes(attribute.String("error.type", e.Side.String()+": "+strconv.Itoa(e.Status)))
		sp.server.SetStatus(codes.Error, e.Error())
	} else if s.Stats.Status >= 500 {
		sp.server.SetStatus(codes.Error, "")
	}
	sp.server.End(end)
}

// exportErrors logs the SDK's errors (a collector that is down fails
// every batch) at most once a minute, with a count of the others.
type exportErrors struct {
	logger *slog.Logger
	mu     sync.Mutex
	last   time.Time
	more   int
}

func (h *exportErrors) Handle(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if time.Since(h.last) < time.Minute {
		h.more++
		return
	}
	h.logger.Warn("tracing: export failed; spans lost", "err", err, "errors_since_last", h.more)
	h.last, h.more = time.Now(), 0
}
