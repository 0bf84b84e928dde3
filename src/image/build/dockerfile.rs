//! The parsed form of a Dockerfile, as BuildKit's frontend sees it: parser directives, the
//! `ARG`s before the first `FROM`, and stages of instructions. Words are kept as written (quotes
//! and `$` references included): the builder expands them per instruction with the stage's
//! variables (`super::expand`), as BuildKit does, because their values are only known then.

/// A whole Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dockerfile {
    /// The escape character (`\` unless `# escape=` says otherwise).
    pub escape: char,
    /// `# syntax=` as written (accepted, not used).
    pub syntax: Option<String>,
    /// `ARG`s before the first `FROM` (usable in `FROM` lines; redeclared to use in a stage).
    pub global_args: Vec<ArgDecl>,
    /// The stages, in file order.
    pub stages: Vec<Stage>,
}

/// One `FROM` and what follows it up to the next `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The base as written (`debian:bookworm`, `scratch`, `$BASE`, or an earlier stage's name).
    pub base: String,
    /// `AS name`, lowercased as BuildKit does.
    pub name: Option<String>,
    /// `--platform=` as written.
    pub platform: Option<String>,
    /// 1-based line of the `FROM`.
    pub line: usize,
    /// The instructions of the stage.
    pub instructions: Vec<Instruction>,
}

/// One instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// The instruction's text as written (continuations joined), for history and errors.
    pub original: String,
    /// What it is.
    pub kind: InstructionKind,
}

/// `NAME` or `NAME=default` of an `ARG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The name.
    pub name: String,
    /// The default as written (unexpanded), if any.
    pub default: Option<String>,
}

/// Exec form (`["a","b"]`) or shell form (`a b`) of `RUN`, `CMD`, `ENTRYPOINT`, `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandForm {
    /// JSON array: run as given.
    Exec(Vec<String>),
    /// Shell form: run with the stage's `SHELL` (`/bin/sh -c` by default).
    Shell(String),
}

/// A heredoc body (`<<EOF`, `<<-EOF`, `<<"EOF"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word (without quotes), also the file name for `COPY <<name /dst`.
    pub name: String,
    /// The body, lines joined with `\n` and ending with `\n` (leading tabs already removed for
    /// `<<-`).
    pub content: String,
    /// Whether `$` references in the body are expanded (the delimiter was not quoted).
    pub expand: bool,
}

/// The sources and options of `COPY` and `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyInstruction {
    /// Source words as written (heredoc sources appear as `<<NAME` and are in `heredocs`).
    pub sources: Vec<String>,
    /// Destination as written.
    pub dest: String,
    /// `--from=stage|image|context`.
    pub from: Option<String>,
    /// `--chown=user:group`.
    pub chown: Option<String>,
    /// `--chmod=0755` (or symbolic, as BuildKit accepts).
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--exclude=pattern` (repeatable).
    pub exclude: Vec<String>,
    /// `--parents`.
    pub parents: bool,
    /// `ADD --keep-git-dir`: a git source keeps its `.git` dir.
    pub keep_git_dir: bool,
    /// `ADD --checksum=` as written.
    pub checksum: Option<String>,
    /// `ADD --unpack[=bool]`: `None` when not given (archives from the context are unpacked,
    /// remote ones are not, as BuildKit does).
    pub unpack: Option<bool>,
    /// Heredoc bodies used as sources.
    pub heredocs: Vec<Heredoc>,
}

/// `RUN --mount=type=...`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunMount {
    /// `bind` (default), `cache`, `tmpfs`, `secret` or `ssh`.
    pub kind: String,
    /// `target` / `dst` / `destination` (for secrets, default `/run/secrets/<id>`).
    pub target: Option<String>,
    /// `source` / `src`.
    pub source: Option<String>,
    /// `from` (stage, image or context).
    pub from: Option<String>,
    /// `id` (cache and secret).
    pub id: Option<String>,
    /// `rw` / `readwrite` (binds are read-only by default).
    pub read_write: bool,
    /// `sharing=shared|private|locked` (cache).
    pub sharing: Option<String>,
    /// `mode`, `uid`, `gid` as written.
    pub mode: Option<String>,
    /// `uid`.
    pub uid: Option<String>,
    /// `gid`.
    pub gid: Option<String>,
    /// `required` (secret, ssh).
    pub required: bool,
    /// `size` (tmpfs) as written.
    pub size: Option<String>,
    /// `env` (secret: expose as an environment variable instead of a file).
    pub env: Option<String>,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInstruction {
    /// What runs.
    pub command: CommandForm,
    /// `--mount=` options, in order.
    pub mounts: Vec<RunMount>,
    /// `--network=default|none|host`.
    pub network: Option<String>,
    /// `--security=sandbox|insecure`.
    pub security: Option<String>,
    /// Heredocs on the line (`RUN <<EOF`): the first with no command before it is the script.
    pub heredocs: Vec<Heredoc>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckInstruction {
    /// `CMD ...` (exec or shell form).
    pub command: CommandForm,
    /// `--interval=` as written (a Go duration, `30s`).
    pub interval: Option<String>,
    /// `--timeout=`.
    pub timeout: Option<String>,
    /// `--start-period=`.
    pub start_period: Option<String>,
    /// `--start-interval=`.
    pub start_interval: Option<String>,
    /// `--retries=`.
    pub retries: Option<String>,
}

/// What an instruction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    /// `ARG a b=c`.
    Arg(Vec<ArgDecl>),
    /// `ENV k=v ...` or `ENV k v` (raw words).
    Env(Vec<(String, String)>),
    /// `LABEL k=v ...` (raw words).
    Label(Vec<(String, String)>),
    /// `WORKDIR path`.
    Workdir(String),
    /// `USER user[:group]`.
    User(String),
    /// `COPY`.
    Copy(CopyInstruction),
    /// `ADD`.
    Add(CopyInstruction),
    /// `RUN`.
    Run(RunInstruction),
    /// `CMD`.
    Cmd(CommandForm),
    /// `ENTRYPOINT`.
    Entrypoint(CommandForm),
    /// `EXPOSE 80/tcp ...` (raw words).
    Expose(Vec<String>),
    /// `VOLUME ["/a"]` or `VOLUME /a /b`.
    Volume(Vec<String>),
    /// `HEALTHCHECK CMD ...`, or `None` for `HEALTHCHECK NONE`.
    Healthcheck(Option<HealthcheckInstruction>),
    /// `STOPSIGNAL sig`.
    StopSignal(String),
    /// `SHELL ["sh","-c"]` (exec form only).
    Shell(Vec<String>),
    /// `ONBUILD <instruction>`: the trigger text as written, stored in the image config and
    /// run by images built `FROM` it.
    Onbuild(String),
    /// `MAINTAINER name` (deprecated; becomes the image's author).
    Maintainer(String),
}
