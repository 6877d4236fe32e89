//! `chord plots`: re-run the paper's experiments and draw them as SVG.
//!
//! Writes into the output directory:
//! `path_length.svg` (Fig. 10a), `path_length_pdf.svg` (Fig. 10b, N = 4096),
//! `load_balance.svg` (Fig. 8a), `virtual_nodes.svg` (Fig. 9),
//! `failures.svg` (Fig. 11), `churn.svg` (Fig. 12), `ring.svg` (the seed's ring
//! with node 90's fingers drawn as chords and the route of key 15), and
//! `results.json` with every number plotted.

use std::path::Path;

use anyhow::Context;
use chord_core::IdSpace;
use chord_sim::experiments::{self, ChurnParams, FailuresParams};
use plotters::prelude::*;
use serde::Serialize;

#[derive(Serialize, Default)]
struct Results {
    quick: bool,
    path_length: Vec<PathRow>,
    path_pdf_4096: Vec<(u32, f64)>,
    load_balance: Vec<LoadRow>,
    virtual_nodes: Vec<LoadRow>,
    failures: Vec<FailRow>,
    churn: Vec<ChurnRow>,
}

#[derive(Serialize, Clone)]
struct PathRow {
    nodes: usize,
    lookups: usize,
    mean_hops: f64,
    p1: f64,
    p99: f64,
}

#[derive(Serialize, Clone)]
struct LoadRow {
    nodes: usize,
    keys: usize,
    virtual_nodes: usize,
    runs: usize,
    mean: f64,
    p1: f64,
    p99: f64,
    max: f64,
}

#[derive(Serialize, Clone)]
struct FailRow {
    nodes: usize,
    keys: usize,
    fail: f64,
    successors: usize,
    failed_lookup_fraction: f64,
    lost_key_fraction: f64,
}

#[derive(Serialize, Clone)]
struct ChurnRow {
    nodes: usize,
    rate: f64,
    runs: usize,
    duration_s: u64,
    failed_lookup_fraction: f64,
    ci95: f64,
}

fn say(msg: impl AsRef<str>) {
    eprintln!("[plots] {}", msg.as_ref());
}

/// Runs every experiment and writes the plots into `out`.
pub(crate) fn regenerate(out: &Path, quick: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut res = Results {
        quick,
        ..Results::default()
    };
    let seed = 2001;

    // Fig. 10: path length against N = 2^3 .. 2^14, plus N = 10^6.
    let lookups = if quick { 10_000 } else { 100_000 };
    let mut sizes: Vec<usize> = (3..=14).map(|k| 1usize << k).collect();
    sizes.push(1_000_000);
    for &n in &sizes {
        let l = if n == 1_000_000 && !quick {
            1_000_000
        } else {
            lookups
        };
        let r = experiments::path_length(n, l, seed, 160)?;
        say(format!("path length N={n}: mean {:.3}", r.mean_hops));
        if n == 4096 {
            res.path_pdf_4096 = r
                .histogram
                .iter()
                .map(|(h, c)| (*h, *c as f64 / l as f64))
                .collect();
        }
        res.path_length.push(PathRow {
            nodes: n,
            lookups: l,
            mean_hops: r.mean_hops,
            p1: r.p1,
            p99: r.p99,
        });
    }

    // Fig. 8(a): keys per node, N = 10^4, K = 10^5 .. 10^6.
    let runs = if quick { 2 } else { 20 };
    for k in 1..=10 {
        let keys = k * 100_000;
        let r = experiments::load_balance(10_000, keys, 1, seed + k as u64, runs, 160)?;
        say(format!("load balance K={keys}: p99 {}", r.p99));
        res.load_balance.push(LoadRow {
            nodes: 10_000,
            keys,
            virtual_nodes: 1,
            runs,
            mean: r.mean,
            p1: r.p1,
            p99: r.p99,
            max: r.max,
        });
    }
    // Fig. 9: virtual nodes, N = 10^4, K = 10^6.
    let vruns = if quick { 1 } else { 10 };
    for v in [1, 2, 5, 10, 20] {
        let r = experiments::load_balance(10_000, 1_000_000, v, seed + 100 + v as u64, vruns, 160)?;
        say(format!("virtual nodes v={v}: p1 {} p99 {}", r.p1, r.p99));
        res.virtual_nodes.push(LoadRow {
            nodes: 10_000,
            keys: 1_000_000,
            virtual_nodes: v,
            runs: vruns,
            mean: r.mean,
            p1: r.p1,
            p99: r.p99,
            max: r.max,
        });
    }

    // Fig. 11: simultaneous failures, N = 10^4, K = 10^6.
    let (fnodes, fkeys) = if quick {
        (1_000, 100_000)
    } else {
        (10_000, 1_000_000)
    };
    for i in 1..=10 {
        let fail = (i * 5) as f64 / 100.0;
        let p = FailuresParams {
            nodes: fnodes,
            keys: fkeys,
            fail,
            successors: 20,
            replicas: 4,
            lookups: 10_000,
            seed: seed + i,
            bits: 160,
        };
        let (r, _) = experiments::failures(&p)?;
        say(format!(
            "failures p={fail:.2}: failed lookups {:.4}, lost keys {:.5}",
            r.failed_lookup_fraction, r.lost_key_fraction
        ));
        res.failures.push(FailRow {
            nodes: fnodes,
            keys: fkeys,
            fail,
            successors: 20,
            failed_lookup_fraction: r.failed_lookup_fraction,
            lost_key_fraction: r.lost_key_fraction,
        });
    }

    // Fig. 12: churn, 500 nodes, stabilization every 15-45 s.
    let (cdur, cruns) = if quick { (1_800, 1) } else { (7_200, 3) };
    for rate in [0.01, 0.02, 0.04, 0.06, 0.08, 0.1] {
        let p = ChurnParams {
            nodes: 500,
            rate,
            seed,
            duration_s: cdur,
            runs: cruns,
            successors: 8,
            bits: 160,
        };
        let r = experiments::churn(&p)?;
        say(format!(
            "churn rate {rate}: failed {:.4} +- {:.4}",
            r.failed_lookup_fraction, r.ci95
        ));
        res.churn.push(ChurnRow {
            nodes: 500,
            rate,
            runs: cruns,
            duration_s: cdur,
            failed_lookup_fraction: r.failed_lookup_fraction,
            ci95: r.ci95,
        });
    }

    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&res)?,
    )?;
    draw_all(out, &res)?;
    ring_picture(&out.join("ring.svg"))?;
    say(format!("wrote plots to {}", out.display()));
    Ok(())
}

fn draw_all(out: &Path, res: &Results) -> anyhow::Result<()> {
    // Path length against log2 N.
    {
        let file = out.join("path_length.svg");
        let root = SVGBackend::new(&file, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let xs: Vec<f64> = res
            .path_length
            .iter()
            .map(|r| (r.nodes as f64).log2())
            .collect();
        let ymax = res.path_length.iter().map(|r| r.p99).fold(0.0, f64::max) + 2.0;
        let mut c = ChartBuilder::on(&root)
            .caption(
                "Path length vs N (SIGCOMM Fig. 10a); hops = len(path) - 1",
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(2.0f64..21.0, 0.0f64..ymax)?;
        c.configure_mesh().x_desc("log2 N").y_desc("hops").draw()?;
        let pts = |f: &dyn Fn(&PathRow) -> f64| -> Vec<(f64, f64)> {
            xs.iter()
                .zip(&res.path_length)
                .map(|(x, r)| (*x, f(r)))
                .collect()
        };
        c.draw_series(LineSeries::new(pts(&|r| r.mean_hops), &BLUE))?
            .label("mean")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        c.draw_series(
            pts(&|r| r.mean_hops)
                .into_iter()
                .map(|p| Circle::new(p, 3, BLUE.filled())),
        )?;
        c.draw_series(LineSeries::new(pts(&|r| r.p1), &GREEN))?
            .label("1st percentile")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
        c.draw_series(LineSeries::new(pts(&|r| r.p99), &RED))?
            .label("99th percentile")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        c.draw_series(LineSeries::new(
            (4..=42).map(|i| {
                let x = i as f64 / 2.0;
                (x, 0.5 * x + 1.0)
            }),
            BLACK.mix(0.4),
        ))?
        .label("1/2 log2 N + 1 (paper's mean + final hop)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
    }
    // PDF at N = 4096.
    {
        let file = out.join("path_length_pdf.svg");
        let root = SVGBackend::new(&file, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let xmax = res.path_pdf_4096.iter().map(|p| p.0).max().unwrap_or(1) + 1;
        let ymax = res.path_pdf_4096.iter().map(|p| p.1).fold(0.0, f64::max) * 1.15;
        let mut c = ChartBuilder::on(&root)
            .caption(
                "PDF of hops, N = 4096 (SIGCOMM Fig. 10b)",
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0u32..xmax, 0.0f64..ymax.max(0.01))?;
        c.configure_mesh().x_desc("hops").y_desc("PDF").draw()?;
        c.draw_series(
            res.path_pdf_4096
                .iter()
                .map(|(h, p)| Rectangle::new([(*h, 0.0), (*h + 1, *p)], BLUE.mix(0.6).filled())),
        )?;
        root.present()?;
    }
    // Load balance against K.
    {
        let file = out.join("load_balance.svg");
        let root = SVGBackend::new(&file, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let ymax = res.load_balance.iter().map(|r| r.p99).fold(0.0, f64::max) * 1.1;
        let mut c = ChartBuilder::on(&root)
            .caption(
                "Keys per node, N = 10^4 (SIGCOMM Fig. 8a)",
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0f64..11.0, 0.0f64..ymax)?;
        c.configure_mesh()
            .x_desc("keys (x 10^5)")
            .y_desc("keys per node")
            .draw()?;
        for (f, col, name) in [
            (0usize, BLUE, "mean"),
            (1, GREEN, "1st percentile"),
            (2, RED, "99th percentile"),
        ] {
            let pts: Vec<(f64, f64)> = res
                .load_balance
                .iter()
                .map(|r| {
                    let y = [r.mean, r.p1, r.p99][f];
                    (r.keys as f64 / 1e5, y)
                })
                .collect();
            c.draw_series(LineSeries::new(pts.clone(), &col))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col));
            c.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled())))?;
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
    }
    // Virtual nodes.
    {
        let file = out.join("virtual_nodes.svg");
        let root = SVGBackend::new(&file, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let ymax = res.virtual_nodes.iter().map(|r| r.p99).fold(0.0, f64::max) * 1.1;
        let mut c = ChartBuilder::on(&root)
            .caption(
                "Keys per physical node vs virtual nodes, N = 10^4, K = 10^6 (Fig. 9)",
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0f64..21.0, 0.0f64..ymax)?;
        c.configure_mesh()
            .x_desc("virtual nodes per physical node")
            .y_desc("keys per node")
            .draw()?;
        for (f, col, name) in [
            (0usize, BLUE, "mean"),
            (1, GREEN, "1st percentile"),
            (2, RED, "99th percentile"),
        ] {
            let pts: Vec<(f64, f64)> = res
                .virtual_nodes
                .iter()
                .map(|r| (r.virtual_nodes as f64, [r.mean, r.p1, r.p99][f]))
                .collect();
            c.draw_series(LineSeries::new(pts.clone(), &col))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col));
            c.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled())))?;
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    // Failures.
    {
        let file = out.join("failures.svg");
        let root = SVGBackend::new(&file, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut c = ChartBuilder::on(&root)
            .caption(
                "Failed lookups after simultaneous failures (SIGCOMM Fig. 11)",
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0f64..0.55, 0.0f64..0.55)?;
        c.configure_mesh()
            .x_desc("fraction of failed nodes")
            .y_desc("fraction")
            .draw()?;
        c.draw_series(LineSeries::new(
            vec![(0.0, 0.0), (0.55, 0.55)],
            BLACK.mix(0.3),
        ))?
        .label("y = x (only keys whose owner died)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.3)));
        let pts: Vec<(f64, f64)> = res
            .failures
            .iter()
            .map(|r| (r.fail, r.failed_lookup_fraction))
            .collect();
        c.draw_series(LineSeries::new(pts.clone(), &BLUE))?
            .label("failed lookups (original owner not found)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        c.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, BLUE.filled())))?;
        let lost: Vec<(f64, f64)> = res
            .failures
            .iter()
            .map(|r| (r.fail, r.lost_key_fraction))
            .collect();
        c.draw_series(LineSeries::new(lost, &RED))?
            .label("keys lost (owner + 3 replicas all failed)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
    }
    // Churn.
    {
        let file = out.join("churn.svg");
        let root = SVGBackend::new(&file, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let ymax = res
            .churn
            .iter()
            .map(|r| r.failed_lookup_fraction + r.ci95)
            .fold(0.0, f64::max)
            * 1.2;
        let mut c = ChartBuilder::on(&root)
            .caption(
                "Lookup failures under churn, 500 nodes (SIGCOMM Fig. 12)",
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0f64..0.11, 0.0f64..ymax.max(0.01))?;
        c.configure_mesh()
            .x_desc("node join rate = failure rate (per second)")
            .y_desc("failed lookups (fraction)")
            .draw()?;
        let pts: Vec<(f64, f64)> = res
            .churn
            .iter()
            .map(|r| (r.rate, r.failed_lookup_fraction))
            .collect();
        c.draw_series(LineSeries::new(pts.clone(), &BLUE))?;
        c.draw_series(pts.iter().map(|p| Circle::new(*p, 3, BLUE.filled())))?;
        c.draw_series(res.churn.iter().map(|r| {
            PathElement::new(
                vec![
                    (r.rate, r.failed_lookup_fraction - r.ci95),
                    (r.rate, r.failed_lookup_fraction + r.ci95),
                ],
                BLUE,
            )
        }))?;
        root.present()?;
    }
    Ok(())
}

/// The seed's ring (m = 7; nodes 10, 32, 60, 90, 105, 120) as a circle, node
/// 90's fingers as chords, and the route of key 15 (90 -> 10 -> 32).
fn ring_picture(path: &Path) -> anyhow::Result<()> {
    let bits = 7;
    let nodes = [10u64, 32, 60, 90, 105, 120];
    let table = experiments::fingers(bits, &nodes, 90)?;
    let route = experiments::lookup(
        bits,
        &nodes,
        90,
        chord_core::Id::from_u64(15),
        experiments::Route::Iterative,
    )?;
    let space = IdSpace::new(bits)?;
    // Clockwise from the top, like the slides.
    let pos = |v: f64| -> (f64, f64) {
        let a = std::f64::consts::FRAC_PI_2 - 2.0 * std::f64::consts::PI * v / 128.0;
        (a.cos(), a.sin())
    };
    let root = SVGBackend::new(path, (700, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut c = ChartBuilder::on(&root)
        .caption(
            "m = 7 ring: node 90's fingers (blue) and lookup of key 15 (red)",
            ("sans-serif", 18),
        )
        .margin(10)
        .build_cartesian_2d(-1.35f64..1.35, -1.35f64..1.35)?;
    c.draw_series(LineSeries::new(
        (0..=360).map(|d| {
            let a = d as f64 * std::f64::consts::PI / 180.0;
            (a.cos(), a.sin())
        }),
        BLACK.mix(0.5),
    ))?;
    let mut seen = std::collections::BTreeSet::new();
    for f in &table.fingers {
        let target = f.node.to_u64().unwrap_or(0);
        if seen.insert(target) {
            c.draw_series(std::iter::once(PathElement::new(
                vec![pos(90.0), pos(target as f64)],
                BLUE.mix(0.7).stroke_width(2),
            )))?;
        }
        // Finger starts as small ticks.
        let (x, y) = pos(f.start.to_u64().unwrap_or(0) as f64);
        c.draw_series(std::iter::once(Circle::new((x, y), 2, BLUE.filled())))?;
    }
    let rp: Vec<(f64, f64)> = route
        .path
        .iter()
        .map(|n| pos(n.to_u64().unwrap_or(0) as f64))
        .collect();
    c.draw_series(std::iter::once(PathElement::new(
        rp,
        RED.mix(0.8).stroke_width(3),
    )))?;
    let (kx, ky) = pos(15.0);
    c.draw_series(std::iter::once(Circle::new((kx, ky), 5, RED.filled())))?;
    c.draw_series(std::iter::once(Text::new(
        "k=15",
        (kx * 1.12, ky * 1.12),
        ("sans-serif", 14).into_font().color(&RED),
    )))?;
    for n in nodes {
        let (x, y) = pos(n as f64);
        c.draw_series(std::iter::once(Circle::new((x, y), 7, BLACK.filled())))?;
        c.draw_series(std::iter::once(Text::new(
            format!("N{n}"),
            (x * 1.15 - 0.06, y * 1.15 + 0.03),
            ("sans-serif", 16).into_font(),
        )))?;
    }
    let _ = space;
    root.present()?;
    Ok(())
}
