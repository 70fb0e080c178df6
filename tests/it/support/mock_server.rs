//! One start-up for every axum mock: bind a free 127.0.0.1 port, serve a Router on a
//! runtime of its own, give the base URL, and shut down when dropped.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

pub struct MockServer {
    pub addr: SocketAddr,
    app: axum::Router,
    /// The accept loop; `None` while paused (connections are refused).
    serving: Mutex<Option<JoinHandle<()>>>,
    /// `None` only during drop.
    runtime: Option<Runtime>,
}

impl MockServer {
    /// Serve `app` on a free 127.0.0.1 port.
    pub fn start(app: axum::Router) -> MockServer {
        // Two workers: a mock answers the binary's concurrent requests concurrently,
        // and a handler that waits (latency, a held answer) does not stall the others.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("addr");
        let serving = runtime.spawn(serve(listener, app.clone()));
        MockServer {
            addr,
            app,
            serving: Mutex::new(Some(serving)),
            runtime: Some(runtime),
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("runtime")
    }

    /// Close the listening socket: new connections to the port are refused (as from a
    /// host that is down) until [`MockServer::resume`].
    pub fn pause(&self) {
        let Some(task) = self.serving.lock().expect("serving").take() else {
            return;
        };
        task.abort();
        // Wait until the task (and with it the listener) is gone.
        let _ = self.runtime().block_on(task);
    }

    /// Listen again on the same port.
    pub fn resume(&self) {
        let mut serving = self.serving.lock().expect("serving");
        if serving.is_some() {
            return;
        }
        let listener = self
            .runtime()
            .block_on(tokio::net::TcpListener::bind(self.addr))
            .expect("bind the port again");
        *serving = Some(self.runtime().spawn(serve(listener, self.app.clone())));
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        // Without waiting: a handler may be holding an answer (a slow-server fault).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, app: axum::Router) {
    let _ = axum::serve(listener, app).await;
}
