//! Matching against 10,000 routes (template, prefix and exact paths mixed, plus a few regex
//! routes every request must try) and compiling that many routes, i.e. the work of one reload.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use strangler_rules::{Body, Environment, Outcome, Request, SourceFile, compile};

fn rules(n: usize) -> String {
    let mut y = String::from("routes:\n");
    for i in 0..n {
        let path = match i % 3 {
            0 => format!("{{ template: \"/svc{i}/orders/{{id}}\" }}"),
            1 => format!("{{ prefix: /svc{i}/catalog }}"),
            _ => format!("{{ exact: /svc{i}/health }}"),
        };
        y.push_str(&format!(
            "  - name: r{i}\n    match: {{ methods: [GET, POST], path: {path}, headers: [ {{ name: x-tenant, regex: \"t[0-9]+\" }} ] }}\n    target: {{ service: new, weight: 25, sticky: {{ header: x-user }} }}\n"
        ));
    }
    for i in 0..5 {
        y.push_str(&format!(
            "  - name: re{i}\n    match: {{ path: {{ regex: \"/legacy{i}/.*\\\\.php\" }} }}\n    target: {{ service: legacy }}\n"
        ));
    }
    y
}

fn bench(c: &mut Criterion) {
    let text = rules(10_000);
    let files = [SourceFile {
        name: "routes.yaml".into(),
        text,
    }];
    let ctx = Environment {
        services: Some(vec!["new".into()]),
    };
    let set = compile(&files, &ctx).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", "t42".parse().unwrap());
    headers.insert("x-user", "alice".parse().unwrap());
    let method = Method::GET;
    let find = |path: &'static str| {
        let req = Request {
            method: &method,
            host: Some("shop"),
            path,
            query: None,
            headers: &headers,
        };
        match set.find(&req, Body::NotRead) {
            Outcome::Matched { route, .. } => route.name.len(),
            _ => 0,
        }
    };
    assert!(find("/svc9999/orders/7") == 0 || find("/svc9999/orders/7") > 0);
    c.bench_function("match: 10k routes, template hit (last route)", |b| {
        b.iter(|| black_box(find(black_box("/svc9999/orders/7"))));
    });
    c.bench_function("match: 10k routes, prefix hit", |b| {
        b.iter(|| black_box(find(black_box("/svc5002/catalog/teapots/42"))));
    });
    c.bench_function("match: 10k routes, miss (default route)", |b| {
        b.iter(|| black_box(find(black_box("/nothing/here/at/all"))));
    });
    let mut g = c.benchmark_group("reload");
    g.sample_size(10);
    g.bench_function("compile 10k routes (parse + validate + index)", |b| {
        b.iter(|| black_box(compile(&files, &ctx).unwrap().len()));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
