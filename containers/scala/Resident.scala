// flora-eval's resident scalac: scalac's own driver (scala.tools.nsc.MainClass, what `scalac`
// runs: the same settings, messages, summary and exceptions) with one compiler instance
// (Global) kept between programs, as fsc's compile server keeps its own (2.11's
// StandardCompileServer: reused while the settings are equal, dropped after a FatalError).
// ScalacWarm.java asks it once per program.
//
// fsc forgets nothing between runs: the classes and objects a program defined stay in the
// empty package's scope, where the next program would find them. Here every top-level symbol
// of a program lives in the empty package (no `package` clause: else the Global is dropped),
// so after each run the empty package is given a fresh loader of the class path, as the
// compiler's mirror did when it was made: the next program sees the class path's classes only,
// as a fresh scalac does. The class path's "." is the lane's work dir, which holds nothing
// but the program's source when a compile starts (the worker makes it afresh for each
// program); a dir with class files or packages in it gets a new Global.
package floraeval

import java.io.{File, PrintStream}

import scala.tools.nsc.{FatalError, Global, MainClass}

object Resident {
  private var compiler: Global = null
  private var compilerArgs: List[String] = Nil // its settings: the arguments less the files

  private class Driver(arguments: List[String], fresh: Boolean) extends MainClass {
    def fails: Boolean = reporter.hasErrors

    override def newCompiler(): Global = {
      val args = arguments.filterNot(command.files.contains)
      if (compiler != null && !fresh && args == compilerArgs) {
        compiler.currentSettings = settings
        compiler.reporter = reporter
      } else {
        compiler = Global(settings, reporter)
        compilerArgs = args
      }
      compiler
    }

    override def doCompile(global: Global): Unit = {
      try super.doCompile(global)
      catch { case e: FatalError => compiler = null; throw e }  // scalac's driver reports it
      val keep = !fresh && command.files.forall(inEmptyPackage) &&
        global.currentRun.symSource.keys.forall(_.owner.isEmptyPackageClass)
      if (keep) forget(global) else compiler = null
    }
  }

  private def inEmptyPackage(file: String): Boolean =
    !"""\bpackage\b""".r.findFirstIn(new String(java.nio.file.Files.readAllBytes(new File(file).toPath), "UTF-8")).isDefined

  // What a run left in the empty package (the program's classes and objects) goes with a new
  // loader, the one the mirror's init() gave it (rootLoader), set as resetPackageClass sets
  // a package's info after a run (entering the first phase).
  private def forget(global: Global): Unit = {
    import global._
    val loader = rootMirror.getClass.getMethod("rootLoader").invoke(rootMirror).asInstanceOf[Type]
    enteringPhase(currentRun.parserPhase) {
      rootMirror.EmptyPackageClass.setInfo(loader)
    }
  }

  // A dir that the class path's "." would list (class files, packages) is not the one this
  // Global listed when it was made.
  private def holdsClasses(dir: File): Boolean =
    Option(dir.listFiles).getOrElse(Array.empty[File]).exists { f =>
      f.getName.endsWith(".class") || (f.isDirectory && !f.getName.startsWith("."))
    }

  /** scalac's exit code for `args` (1 when its reporter has errors), its messages on `err`;
   *  an exception that scalac would end with is thrown. */
  def compile(args: Array[String], dir: String, out: PrintStream, err: PrintStream): Int = {
    val driver = new Driver(args.toList, holdsClasses(new File(dir)))
    try Console.withOut(out)(Console.withErr(err)(driver.process(args)))
    catch { case e: Throwable => compiler = null; throw e }
    if (driver.fails) 1 else 0
  }
}
